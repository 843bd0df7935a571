"""Live status over GraphQL subscriptions: photodrop against a bare websocket baseline.

photodrop: a real ``photodrop serve`` process. Clients speak graphql-transport-ws on ``/graphql``
(``connection_init`` carrying the key, ``connection_ack``, then one ``subscribe`` per subscription).
An update is a small JPEG uploaded through ``POST /api/v1/upload/{session}/images``; a project event
is a session created through ``POST /v1/sessions``. Latency runs from the update's ``updatedAt``
to the moment the client has the ``next`` message (same machine, same wall clock). photodrop stamps
``updatedAt`` as its write unit runs, inside the transaction, so the figure includes the rest of that
transaction and its commit: an upper bound on commit -> subscriber.

Baseline: a bare Starlette app under the same uvicorn defaults. Its websocket endpoint takes
``{"id", "channel"}`` messages; for each it subscribes the socket to the channel through
encode/broadcaster ``memory://`` (as photodrop does), answers ``ready``, and relays every message as
``{"id", "type": "next", "payload": {"data": ...}}``. ``POST /publish/{channel}`` reads the body,
stamps the time and publishes a small JSON message: the least work that still takes a timestamped
update from an HTTP request to the socket subscribed to its channel.

Both servers get the same clients (``websockets``) and the same load, phase by phase:

1. latency: LATENCY_SUBSCRIPTIONS subscriptions, each to its own session (channel), updated by
   RATE requests a second for SECONDS, round robin over the sessions; p50 and p99, and the server's
   CPU time per update (all threads).
2. fan-out: FANOUT_CONNECTIONS x FANOUT_PER_CONNECTION subscribers of the project feed
   (``sessionsUpdated``; one channel on the baseline), then one event at a time, FANOUT_EVENTS times;
   the time from the event's stamp until the median and the last subscriber have it, and the
   server's CPU time per message delivered.
3. memory: the server's RSS before and after MEMORY_CONNECTIONS connections, then after
   MEMORY_CONNECTIONS x MEMORY_PER_CONNECTION idle ``sessionUpdated`` subscriptions, each to its own
   session; KiB per connection and per subscription.
4. long polls (photodrop only, on a fresh ``photodrop serve`` of its own): WARMUP_POLLS requests to
   ``GET /v1/sessions/{id}/poll`` are held first, then the server's RSS is read before and while
   LONG_POLLS more are held too, each on its own connection and its own session; KiB per held poll,
   connection included. Held means photodrop's own ``photodrop_long_polls_held`` gauge says so.
   This is the steady state's cost of one more poll: the first tranche has built what a server
   builds once, and a fresh server has no memory freed by earlier work for the polls to reuse
   (after the fan-out a shared one has tens of MiB free: polls measured there read ~40% cheaper).
   Polls counted as held may still be on their first look; RSS is read a second after all are.

photodrop runs with PHOTODROP_RATE_LIMIT_PER_MINUTE=0: one key sends far more than a client may.
Each ratio is printed beside the goal it is held to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from _harness import Server, baseline, photodrop
from _photos import BOUNDARY, make_photos, multipart
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

LATENCY_SUBSCRIPTIONS = 1000
LATENCY_PER_CONNECTION = 1  # one status page per session, the common case
RATE = 30.0  # updates a second
SECONDS = 10.0
MAX_IN_FLIGHT = 32  # update requests; past this the sender waits and the achieved rate drops
FANOUT_CONNECTIONS = 100
FANOUT_PER_CONNECTION = 100
FANOUT_EVENTS = 3
MEMORY_CONNECTIONS = 30
MEMORY_PER_CONNECTION = 100  # photodrop's default limit per connection
WARMUP_SUBSCRIPTIONS = 100
OPENING = 50  # websocket handshakes at once
CREATING = 8  # concurrent session creations while setting up
PROBES = 10  # project events sent, at most, until every fan-out subscriber is known to be attached
WAIT = 60.0  # the longest wait for anything: a handshake, a reply, a set of messages
SETTLE = 1.0  # seconds the server is left alone before its RSS is read
LONG_POLLS = 3000  # each on its own connection; many more overflow the accept backlog of a busy server
WARMUP_POLLS = 300  # held before the measured ones, and through their measurement
POLL_SECONDS = 60  # the longest a poll may be held; set-up and measurement must fit in it
# Goals: photodrop's p99 at most this many times the raw relay's, and under this many ms; the last
# of the fan-out's subscribers served in this many ms; KiB per idle subscription and per held poll.
GOAL_P99_RATIO, GOAL_P99_MS, GOAL_FANOUT_MS, GOAL_SUBSCRIPTION_KIB, GOAL_POLL_KIB = 2.0, 10.0, 1000.0, 10.0, 20.0

SESSION_FIELDS = "{ id status imageCount version updatedAt }"
SESSION_QUERY = f"subscription($id: ID!){{ sessionUpdated(id: $id) {SESSION_FIELDS} }}"
PROJECT_QUERY = f"subscription {{ sessionsUpdated {SESSION_FIELDS} }}"
PROJECT_CHANNEL = "project"


def expect(response: httpx.Response, status: int = 201) -> None:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:500]}")


# --- the baseline server -------------------------------------------------------------------


def baseline_app() -> Starlette:
    broadcast = Broadcast("memory://")
    versions: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcast.connect()
        try:
            yield
        finally:
            await broadcast.disconnect()

    async def publish(request: Request) -> Response:
        await request.body()
        channel = request.path_params["channel"]
        version = versions[channel] = versions.get(channel, 0) + 1
        update = {"id": channel, "version": version, "updatedAt": datetime.now(UTC).isoformat()}
        await broadcast.publish(channel, json.dumps(update))
        return JSONResponse(update, status_code=201)

    async def feed(websocket: WebSocket) -> None:
        await websocket.accept()
        relays: set[asyncio.Task[None]] = set()

        async def relay(sub_id: str, channel: str) -> None:
            async with broadcast.subscribe(channel) as subscriber:
                await websocket.send_text(json.dumps({"id": sub_id, "type": "ready"}))
                while True:
                    event = await subscriber.get()
                    await websocket.send_text(
                        f'{{"id":{json.dumps(sub_id)},"type":"next","payload":{{"data":{{"update":{event.message}}}}}}}'
                    )

        try:
            while True:
                request = await websocket.receive_json()
                relays.add(asyncio.create_task(relay(str(request["id"]), str(request["channel"]))))
        except WebSocketDisconnect:
            pass
        finally:
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

    routes = [Route("/publish/{channel}", publish, methods=["POST"]), WebSocketRoute("/ws", feed)]
    return Starlette(routes=routes, lifespan=lifespan)


# --- clients -------------------------------------------------------------------------------


class Inbox:
    """Every message the connections of one phase received, with the wall-clock time it arrived."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []

    async def wait_for(self, count: int, within: float = WAIT) -> bool:
        """Whether ``count`` messages are in by ``within`` seconds from now."""
        deadline = time.monotonic() + within
        while len(self.arrivals) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def settle(self, count: int, quiet: float) -> bool:
        """Wait for ``count`` messages, or until none has come for ``quiet`` seconds; whether all came."""
        deadline = time.monotonic() + WAIT
        seen, since = len(self.arrivals), time.monotonic()
        while len(self.arrivals) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if len(self.arrivals) != seen:
                seen, since = len(self.arrivals), time.monotonic()
            elif time.monotonic() - since > quiet:
                break
        return len(self.arrivals) >= count


async def _read(ws: ClientConnection, inbox: Inbox) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            inbox.arrivals.append((time.time(), str(message)))


@dataclass
class Feed:
    """One websocket connection whose reader drops every message into an inbox."""

    ws: ClientConnection
    reader: asyncio.Task[None]

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.reader, 10)


def updates(arrivals: list[tuple[float, str]]) -> Iterator[tuple[float, float]]:
    """(arrived, stamped) for each update among ``arrivals``, in seconds since the epoch."""
    for arrived, text in arrivals:
        message = json.loads(text)
        if message.get("type") in ("error", "complete") or "errors" in message.get("payload", {}):
            raise RuntimeError(f"subscription failed: {text[:500]}")
        if message.get("type") == "next":
            (item,) = message["payload"]["data"].values()
            yield arrived, datetime.fromisoformat(item["updatedAt"]).timestamp()


class Side:
    """What the phases need from a server: how to connect, subscribe, and make something change."""

    name: str
    server: Server
    greets_project: bool  # whether a project-feed subscription says so when it is attached

    async def connect(self, inbox: Inbox) -> Feed:
        raise NotImplementedError

    def watch_session(self, sub_id: str, session: str) -> str:
        raise NotImplementedError

    def watch_project(self, sub_id: str) -> str:
        raise NotImplementedError

    async def update(self, client: httpx.AsyncClient, session: str) -> None:
        raise NotImplementedError

    async def project_event(self, client: httpx.AsyncClient) -> None:
        raise NotImplementedError


class Photodrop(Side):
    name = "photodrop"
    greets_project = False

    def __init__(self, server: Server, key: str) -> None:
        self.server = server
        self.key = key
        self.ws_url = server.url.replace("http://", "ws://") + "/graphql"
        self.upload = multipart(make_photos((64, 48), (20,), quality=85)[0], 1)  # ~2 KB

    async def connect(self, inbox: Inbox) -> Feed:
        ws = await connect(self.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=WAIT)
        try:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {self.key}"}}))
            async with asyncio.timeout(WAIT):
                reply = json.loads(await ws.recv())
            if reply.get("type") != "connection_ack":
                raise RuntimeError(f"no connection_ack: {reply}")
        except BaseException:
            await ws.close()
            raise
        return Feed(ws, asyncio.create_task(_read(ws, inbox)))

    def watch_session(self, sub_id: str, session: str) -> str:
        payload = {"query": SESSION_QUERY, "variables": {"id": session}}
        return json.dumps({"id": sub_id, "type": "subscribe", "payload": payload})

    def watch_project(self, sub_id: str) -> str:
        return json.dumps({"id": sub_id, "type": "subscribe", "payload": {"query": PROJECT_QUERY}})

    async def update(self, client: httpx.AsyncClient, session: str) -> None:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        expect(
            await client.post(f"{self.server.url}/api/v1/upload/{session}/images", content=self.upload, headers=headers)
        )

    async def project_event(self, client: httpx.AsyncClient) -> None:
        body = {"delivery_mode": "poll", "max_images": 50}
        headers = {"Authorization": f"Bearer {self.key}"}
        expect(await client.post(f"{self.server.url}/v1/sessions", json=body, headers=headers))

    async def create_sessions(self, count: int) -> list[str]:
        ids: list[str] = []
        remaining = iter(range(count))
        body = {"delivery_mode": "poll", "max_images": 50}
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {self.key}"}, timeout=WAIT) as client:

            async def worker() -> None:
                for _ in remaining:
                    response = await client.post(f"{self.server.url}/v1/sessions", json=body)
                    expect(response)
                    ids.append(response.json()["id"])

            await asyncio.gather(*(worker() for _ in range(CREATING)))
        return ids


class Baseline(Side):
    name = "baseline"
    greets_project = True

    def __init__(self, server: Server, upload: bytes) -> None:
        self.server = server
        self.ws_url = server.url.replace("http://", "ws://") + "/ws"
        self.upload = upload

    async def connect(self, inbox: Inbox) -> Feed:
        ws = await connect(self.ws_url, open_timeout=WAIT)
        return Feed(ws, asyncio.create_task(_read(ws, inbox)))

    def watch_session(self, sub_id: str, session: str) -> str:
        return json.dumps({"id": sub_id, "channel": session})

    def watch_project(self, sub_id: str) -> str:
        return json.dumps({"id": sub_id, "channel": PROJECT_CHANNEL})

    async def update(self, client: httpx.AsyncClient, session: str) -> None:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        expect(await client.post(f"{self.server.url}/publish/{session}", content=self.upload, headers=headers))

    async def project_event(self, client: httpx.AsyncClient) -> None:
        expect(await client.post(f"{self.server.url}/publish/{PROJECT_CHANNEL}", json={}))


@contextlib.asynccontextmanager
async def connections(side: Side, inbox: Inbox, count: int) -> AsyncIterator[list[Feed]]:
    """``count`` open connections, OPENING handshakes at a time; all closed when the block ends."""
    opened: list[Feed] = []
    gate = asyncio.Semaphore(OPENING)

    async def one() -> None:
        async with gate:
            opened.append(await side.connect(inbox))

    try:
        async with asyncio.TaskGroup() as group:  # one failure cancels the other handshakes
            for _ in range(count):
                group.create_task(one())
        yield opened
    finally:
        await asyncio.gather(*(feed.close() for feed in opened), return_exceptions=True)


async def subscribe(feeds: list[Feed], messages: Callable[[int], str], per_connection: int) -> None:
    """Send ``per_connection`` subscribe messages down each connection, ``messages(n)`` the n-th overall."""

    async def fill(index: int, feed: Feed) -> None:
        for n in range(index * per_connection, (index + 1) * per_connection):
            await feed.ws.send(messages(n))

    await asyncio.gather(*(fill(index, feed) for index, feed in enumerate(feeds)))


async def drive(send: Callable[[httpx.AsyncClient, int], Awaitable[None]], *, rate: float, seconds: float) -> float:
    """Start ``rate * seconds`` requests on a fixed schedule; the rate they were started at."""
    count = round(rate * seconds)
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: list[asyncio.Task[None]] = []
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    async with httpx.AsyncClient(limits=limits, timeout=WAIT) as client:

        async def one(index: int) -> None:
            try:
                await send(client, index)
            finally:
                slots.release()

        start = time.perf_counter()
        for index in range(count):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            tasks.append(asyncio.create_task(one(index)))
        started = time.perf_counter() - start
        failures = [result for result in await asyncio.gather(*tasks, return_exceptions=True) if result is not None]
    if failures:
        raise RuntimeError(f"{len(failures)} of {count} updates failed") from failures[0]
    return count / (started + 1 / rate)


def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# --- the phases ----------------------------------------------------------------------------


@dataclass
class Latency:
    rate: float  # updates started a second
    sent: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms: float  # server CPU per update, from the first update until the last one is delivered


async def latency(side: Side, sessions: list[str]) -> Latency:
    inbox = Inbox()
    watched = sessions[:LATENCY_SUBSCRIPTIONS]
    async with connections(side, inbox, LATENCY_SUBSCRIPTIONS // LATENCY_PER_CONNECTION) as feeds:
        await subscribe(feeds, lambda n: side.watch_session(str(n), watched[n]), LATENCY_PER_CONNECTION)
        if not await inbox.wait_for(len(watched)):
            raise RuntimeError(f"{side.name}: {len(inbox.arrivals)} of {len(watched)} subscriptions answered")
        start, cpu = len(inbox.arrivals), side.server.cpu_seconds()
        rate = await drive(lambda client, n: side.update(client, watched[n % len(watched)]), rate=RATE, seconds=SECONDS)
        sent = round(RATE * SECONDS)
        await inbox.wait_for(start + sent, within=10)
        cpu_ms = 1000 * (side.server.cpu_seconds() - cpu) / sent
        arrivals = inbox.arrivals[start:]
    delays = sorted(1000 * (arrived - stamped) for arrived, stamped in updates(arrivals))
    if not delays:
        raise RuntimeError(f"{side.name}: no update arrived")
    return Latency(rate, sent, len(delays), percentile(delays, 50), percentile(delays, 99), delays[-1], cpu_ms)


@dataclass
class Spread:
    subscribers: int
    first_ms: float
    median_ms: float
    last_ms: float
    cpu_us: float  # server CPU per message delivered, from the event until the last subscriber has it


async def fanout(side: Side) -> list[Spread]:
    inbox = Inbox()
    total = FANOUT_CONNECTIONS * FANOUT_PER_CONNECTION
    spreads = []
    async with (
        connections(side, inbox, FANOUT_CONNECTIONS) as feeds,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        await subscribe(feeds, lambda n: side.watch_project(str(n)), FANOUT_PER_CONNECTION)
        greetings = total if side.greets_project else 0
        if not await inbox.wait_for(greetings):
            raise RuntimeError(f"{side.name}: {len(inbox.arrivals)} of {total} subscriptions answered")
        for _ in range(PROBES):  # photodrop does not say when a subscription is attached: probe until all are
            start = len(inbox.arrivals)
            await side.project_event(client)
            if await inbox.settle(start + total, quiet=2.0):
                break
        else:
            raise RuntimeError(f"{side.name}: {len(inbox.arrivals) - start} of {total} subscribers got a probe")
        for _ in range(FANOUT_EVENTS):
            await asyncio.sleep(0.5)
            start, cpu = len(inbox.arrivals), side.server.cpu_seconds()
            await side.project_event(client)
            if not await inbox.wait_for(start + total):
                raise RuntimeError(f"{side.name}: {len(inbox.arrivals) - start} of {total} subscribers got the event")
            cpu_us = 1e6 * (side.server.cpu_seconds() - cpu) / total
            delays = sorted(1000 * (arrived - stamped) for arrived, stamped in updates(inbox.arrivals[start:]))
            spreads.append(Spread(len(delays), delays[0], statistics.median(delays), delays[-1], cpu_us))
    return spreads


@dataclass
class Memory:
    per_connection_kib: float
    per_subscription_kib: float
    before_mib: float
    after_mib: float


async def warm_up(side: Side, sessions: list[str]) -> None:
    """Run the subscription path once, so lazily built code and caches are not counted as memory per subscription."""
    inbox = Inbox()
    async with connections(side, inbox, 1) as feeds:
        await subscribe(feeds, lambda n: side.watch_session(str(n), sessions[n]), WARMUP_SUBSCRIPTIONS)
        if not await inbox.wait_for(WARMUP_SUBSCRIPTIONS):
            raise RuntimeError(f"{side.name}: {len(inbox.arrivals)} of {WARMUP_SUBSCRIPTIONS} subscriptions answered")


async def memory(side: Side, sessions: list[str]) -> Memory:
    inbox = Inbox()
    count = MEMORY_CONNECTIONS * MEMORY_PER_CONNECTION
    await asyncio.sleep(SETTLE)
    idle = side.server.rss_kib()
    async with connections(side, inbox, MEMORY_CONNECTIONS) as feeds:
        await asyncio.sleep(SETTLE)
        connected = side.server.rss_kib()
        await subscribe(feeds, lambda n: side.watch_session(str(n), sessions[n]), MEMORY_PER_CONNECTION)
        if not await inbox.wait_for(count):
            raise RuntimeError(f"{side.name}: {len(inbox.arrivals)} of {count} subscriptions answered")
        await asyncio.sleep(SETTLE)
        subscribed = side.server.rss_kib()
    return Memory(
        (connected - idle) / MEMORY_CONNECTIONS, (subscribed - connected) / count, idle / 1024, subscribed / 1024
    )


async def held_polls(server: Server) -> int:
    """How many long polls photodrop says it is holding now."""
    async with httpx.AsyncClient(timeout=WAIT) as client:
        response = await client.get(f"{server.url}/metrics")
    for line in response.text.splitlines():
        if line.startswith("photodrop_long_polls_held"):
            return round(float(line.split()[-1]))
    raise RuntimeError(
        f"/metrics answered {response.status_code} without photodrop_long_polls_held: {response.text[:300]}"
    )


async def hold_polls(ours: Photodrop, sessions: list[str], held: list[asyncio.StreamWriter], already: int) -> int:
    """Open one long poll to each of ``sessions``, each on its own connection (its writer added to
    ``held``); how many polls photodrop holds once all are (or once their number stops growing)."""
    host, port = ours.server.url.removeprefix("http://").split(":")
    gate = asyncio.Semaphore(OPENING)

    async def one(session: str) -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(host, int(port))
            held.append(writer)
            request = (
                f"GET /v1/sessions/{session}/poll?timeout={POLL_SECONDS} HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: Bearer {ours.key}\r\n\r\n"
            )
            writer.write(request.encode())
            await writer.drain()

    async with asyncio.TaskGroup() as group:
        for session in sessions:
            group.create_task(one(session))
    # Until all are held, or (on a machine too busy to get there before the first time out)
    # until their number stops growing; the memory is divided by the number held then.
    target, count, since = already + len(sessions), 0, time.monotonic()
    while count < target and time.monotonic() - since < 2 * SETTLE:
        await asyncio.sleep(0.2)
        if (now := await held_polls(ours.server)) > count:
            count, since = now, time.monotonic()
    return count


async def long_polls(ours: Photodrop, sessions: list[str]) -> LongPolls:
    """KiB of server RSS for each long poll held beyond a first tranche still held (its connection included).

    The first WARMUP_POLLS polls are held through the measurement: what a server builds once (pooled
    connections and their threads, caches, lazily built code) is in place, and no memory a released
    poll freed is there for the measured ones to reuse, which would make them look cheaper.
    """
    held: list[asyncio.StreamWriter] = []
    try:
        warm = await hold_polls(ours, sessions[LONG_POLLS:], held, 0)
        await asyncio.sleep(SETTLE)
        before, cpu = ours.server.rss_kib(), ours.server.cpu_seconds()
        count = await hold_polls(ours, sessions[:LONG_POLLS], held, warm) - warm
        await asyncio.sleep(SETTLE)  # polls counted as held may still be on their first look
        during, cpu = ours.server.rss_kib(), ours.server.cpu_seconds() - cpu
    finally:
        for writer in held:
            writer.close()
    if warm < WARMUP_POLLS / 2 or count < LONG_POLLS / 2:
        raise RuntimeError(f"only {warm} + {count} of {WARMUP_POLLS} + {LONG_POLLS} long polls were held at once")
    return LongPolls(warm, count, (during - before) / count, before / 1024, during / 1024, 1000 * cpu / count)


@dataclass
class LongPolls:
    warm: int  # held through the measurement
    held: int  # measured
    kib_per_poll: float
    before_mib: float
    during_mib: float
    cpu_ms_per_poll: float  # the server's, from the first measured poll until RSS is read (the gauge's scrapes too)


async def measure_polls(server: Server, key: str) -> None:
    """The long-poll phase, on a server of its own: what earlier phases left free in the heap of a
    shared one (tens of MiB after the fan-out) would be reused by the polls and hide what they cost."""
    ours = Photodrop(server, key)
    started = time.perf_counter()
    sessions = await ours.create_sessions(LONG_POLLS + WARMUP_POLLS)
    print(f"\nlong polls: a fresh photodrop, {len(sessions)} sessions created in {time.perf_counter() - started:.1f} s")
    polls = await long_polls(ours, sessions)
    print(
        f"long polls: {polls.held} of {LONG_POLLS} GET /v1/sessions/{{id}}/poll held at once beyond {polls.warm} "
        f"held before, one a connection: {polls.kib_per_poll:.1f} KiB each "
        f"(RSS {polls.before_mib:.0f} -> {polls.during_mib:.0f} MiB; server CPU {polls.cpu_ms_per_poll:.2f} ms a poll; "
        f"goal: under {GOAL_POLL_KIB:g} KiB: {goal(polls.kib_per_poll < GOAL_POLL_KIB)})"
    )


# --- the benchmark -------------------------------------------------------------------------


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.1f}" if theirs > 0 else "n/a"


PHASES = ("memory", "latency", "fanout", "polls")


async def measure(photodrop_server: Server, key: str, baseline_server: Server, phases: tuple[str, ...]) -> None:
    ours = Photodrop(photodrop_server, key)
    sides: list[Side] = [ours, Baseline(baseline_server, ours.upload)]
    needed = max(MEMORY_CONNECTIONS * MEMORY_PER_CONNECTION if "memory" in phases else 0, LATENCY_SUBSCRIPTIONS)
    started = time.perf_counter()
    sessions = await ours.create_sessions(needed)
    print(f"set-up: {needed} sessions created in {time.perf_counter() - started:.1f} s")
    for side in sides:
        await warm_up(side, sessions)
    timings = {"set-up": time.perf_counter() - started}

    def lap(phase: str) -> None:
        timings[phase] = time.perf_counter() - started - sum(timings.values())

    # Memory first, while the servers have not yet freed memory they could reuse for subscriptions.
    memories, latencies, spreads = {}, {}, {}
    if "memory" in phases:
        memories = {side.name: await memory(side, sessions) for side in sides}
        lap("memory")
    if "latency" in phases:
        latencies = {side.name: await latency(side, sessions) for side in sides}
        lap("latency")
    if "fanout" in phases:
        spreads = {side.name: await fanout(side) for side in sides}
        lap("fan-out")
    report(latencies, spreads, memories)
    print("\n" + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in timings.items()))


def goal(met: bool) -> str:
    return "goal met" if met else "GOAL MISSED"


def report(latencies: dict[str, Latency], spreads: dict[str, list[Spread]], memories: dict[str, Memory]) -> None:
    print("\nphotodrop runs with PHOTODROP_RATE_LIMIT_PER_MINUTE=0 (the per-key rate limit is off)")
    ours, theirs = Photodrop.name, Baseline.name
    if latencies:
        report_latency(latencies, ours, theirs)
    if spreads:
        report_fanout(spreads, ours, theirs)
    if memories:
        report_memory(memories, ours, theirs)


def report_latency(latencies: dict[str, Latency], ours: str, theirs: str) -> None:
    print(
        f"\nlatency, updatedAt -> subscriber has it: {LATENCY_SUBSCRIPTIONS} sessionUpdated subscriptions, each on its "
        f"own session, {LATENCY_PER_CONNECTION} a connection; {RATE:g} updates/s for {SECONDS:g} s, round robin"
    )
    for name, result in latencies.items():
        print(
            f"  {name:9}: p50 {result.p50_ms:5.1f} ms, p99 {result.p99_ms:5.1f} ms, max {result.max_ms:6.1f} ms; "
            f"{result.received} of {result.sent} received, sent at {result.rate:.1f}/s; "
            f"server CPU {result.cpu_ms:.1f} ms an update"
        )
    a, b = latencies[ours], latencies[theirs]
    print(
        f"  ratio    : p50 {ratio(a.p50_ms, b.p50_ms)}, p99 {ratio(a.p99_ms, b.p99_ms)} "
        f"(goal: p99 at most {GOAL_P99_RATIO:g}x and under {GOAL_P99_MS:g} ms: "
        f"{goal(a.p99_ms <= GOAL_P99_RATIO * b.p99_ms and a.p99_ms < GOAL_P99_MS)})"
    )


def report_fanout(spreads: dict[str, list[Spread]], ours: str, theirs: str) -> None:
    total = FANOUT_CONNECTIONS * FANOUT_PER_CONNECTION
    print(
        f"\nfan-out, one project event -> {total} subscribers ({FANOUT_CONNECTIONS} connections x "
        f"{FANOUT_PER_CONNECTION}; sessionsUpdated on photodrop), from the event's stamp; {FANOUT_EVENTS} events"
    )
    for name, results in spreads.items():
        for n, spread in enumerate(results, 1):
            print(
                f"  {name:9} #{n}: first {spread.first_ms:6.0f} ms, median {spread.median_ms:6.0f} ms, "
                f"last {spread.last_ms:6.0f} ms; {spread.subscribers} received; "
                f"server CPU {spread.cpu_us:.0f} us a message"
            )
    mid, last = (
        {name: statistics.median(getattr(s, f) for s in spreads[name]) for name in spreads}
        for f in ("median_ms", "last_ms")
    )
    print(
        f"  ratio of the medians over the events: median {ratio(mid[ours], mid[theirs])}, "
        f"last {ratio(last[ours], last[theirs])} (goal: the last in under {GOAL_FANOUT_MS:g} ms: "
        f"{goal(last[ours] < GOAL_FANOUT_MS)})"
    )


def report_memory(memories: dict[str, Memory], ours: str, theirs: str) -> None:
    count = MEMORY_CONNECTIONS * MEMORY_PER_CONNECTION
    print(
        f"\nmemory: server RSS before and after {MEMORY_CONNECTIONS} idle connections, then after {count} idle "
        f"sessionUpdated subscriptions on them ({MEMORY_PER_CONNECTION} a connection, each on its own session)"
    )
    for name, used in memories.items():
        print(
            f"  {name:9}: {used.per_subscription_kib:5.1f} KiB a subscription, {used.per_connection_kib:5.1f} KiB "
            f"a connection (RSS {used.before_mib:.0f} -> {used.after_mib:.0f} MiB)"
        )
    per_subscription = {name: used.per_subscription_kib for name, used in memories.items()}
    print(
        f"  ratio    : {ratio(per_subscription[ours], per_subscription[theirs])} a subscription "
        f"(goal: at most {GOAL_SUBSCRIPTION_KIB:g} KiB: {goal(per_subscription[ours] <= GOAL_SUBSCRIPTION_KIB)})"
    )


def main() -> None:
    if sys.argv[1:2] == ["--serve-baseline"]:
        import uvicorn

        uvicorn.run(baseline_app(), host="127.0.0.1", port=int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=PHASES,
        help="run only this phase (repeatable): memory, latency, fanout, polls; all by default",
    )
    phases = tuple(parser.parse_args().only or PHASES)
    with tempfile.TemporaryDirectory(prefix="photodrop-bench-") as tmp:
        root = Path(tmp)
        (root / "baseline").mkdir()
        if set(phases) - {"polls"}:
            with photodrop(root / "photodrop") as (ours, key), baseline(__file__, root / "baseline") as theirs:
                asyncio.run(measure(ours, key, theirs, phases))
        if "polls" in phases:
            with photodrop(root / "photodrop-polls") as (ours, key):
                asyncio.run(measure_polls(ours, key))


if __name__ == "__main__":
    main()
