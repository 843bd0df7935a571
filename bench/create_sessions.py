"""Session creation rate (requests/s) of photodrop against a bare baseline.

photodrop: ``POST /v1/sessions`` with a bearer key on a real ``photodrop serve`` process and the
body a claims app would send (webhook delivery, 2 h expiry, 3 images, JPEG/PNG, a claim tag).
Each request checks the key (held in the process's key cache), validates the body, checks the
webhook host, commits the session and its event row as one unit of the group-commit writer,
publishes the event, and answers with the session.

Baselines, each a bare Starlette app under the same uvicorn defaults whose one endpoint parses the
JSON, inserts one row into SQLite through SQLAlchemy async + aiosqlite, and answers 201 with JSON:

- ``baseline``: the issue's definition, SQLite's default rollback journal (``synchronous=FULL``:
  every commit syncs the journal and the database);
- ``baseline-wal``: a stricter one, WAL with ``synchronous=NORMAL`` like photodrop's own engine.

The load: CONCURRENCY keep-alive connections, each sending its next request once the answer to
the last arrived. They speak HTTP/1.1 through a few lines of asyncio streams, not httpx: httpx's
pool costs 4-5 ms of client CPU per request here, more than either server, so with it the
benchmark measured its own client (every side ran at the client's pace and the ratio tended to
1). Rounds alternate between the sides and the median round is reported (the best too), with each
request's latency (p50/p95/p99/max over every measured round; for photodrop, how many requests
fell in each band of a histogram of slow ones) and the server process's CPU time per
request (all threads), which holds up better on a busy machine; the load average is printed
before and after. With a closed loop, a side's mean latency is CONCURRENCY / its rate (Little's
law). The per-key rate limit is off on photodrop (PHOTODROP_RATE_LIMIT_PER_MINUTE=0), since one
key sends far more than a client may. A password-protected variant (argon2 hashing, which
dominates) is measured on its own, on photodrop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _harness import Server, baseline, compare, photodrop
from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table, event
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CONCURRENCY = 32
REQUESTS = 500  # per round
ROUNDS = 7
WARMUP = 100
PASSWORD_REQUESTS = 24


def session_body(claim: int, password: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "delivery_mode": "webhook",
        # A public address literal: photodrop checks a webhook host when a session is created, and this
        # machine has no DNS to answer a name (each failed lookup waits out the resolver's timeout).
        "webhook_url": "https://192.0.32.10/hook",
        "expires_in": 7200,
        "max_images": 3,
        "allowed_mime_types": ["image/jpeg", "image/png"],
        "tags": {"claim_id": f"CLM-{claim:06d}"},
    }
    if password is not None:
        body["password"] = password
    return body


# --- the baseline servers ------------------------------------------------------------------

metadata = MetaData()
sessions = Table(
    "sessions",
    metadata,
    Column("id", String, primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
)


def baseline_app(db_path: Path, journal: str) -> Starlette:
    """The bare app; ``journal`` is ``default`` (SQLite's rollback journal) or ``wal`` (WAL, synchronous=NORMAL)."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{db_path}", connect_args={"timeout": 30})

    if journal == "wal":

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield
        await engine.dispose()

    async def create(request: Request) -> Response:
        spec = await request.json()
        row = {"id": f"sess_{secrets.token_hex(12)}", "spec": spec, "created_at": datetime.now(UTC)}
        async with engine.begin() as conn:
            await conn.execute(sessions.insert().values(row))
        return JSONResponse({"id": row["id"], "status": "pending", **spec}, status_code=201)

    return Starlette(routes=[Route("/v1/sessions", create, methods=["POST"])], lifespan=lifespan)


# --- the load ------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads answers framed by Content-Length
    (what every side here sends): a client costing a fraction of the servers it measures."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n"
        )
        self.writer.write(head.encode() + body)
        answer = await self.reader.readuntil(b"\r\n\r\n")
        status, length = int(answer[9:12]), None
        for line in answer.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"an answer without Content-Length: {answer[:300]!r}")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass
class Poster:
    """What one side sends: ``bodies()`` POSTed as JSON to ``url`` with ``headers``, each request's
    latency in seconds noted in ``latencies`` (warm-up ones too; dropped before use)."""

    url: str
    bodies: Callable[[], dict[str, Any]]
    headers: dict[str, str]
    latencies: list[float] = field(default_factory=list)

    async def __call__(self, connection: Connection) -> tuple[int, bytes]:
        body = json.dumps(self.bodies()).encode()
        start = time.perf_counter()
        answer = await connection.post("/v1/sessions", body, self.headers)
        self.latencies.append(time.perf_counter() - start)
        return answer


async def lean_load(send: Poster, *, requests: int, concurrency: int, expect: int = 201) -> float:
    """``_harness.load`` on ``Connection``s: ``requests`` from ``concurrency`` connections; wall seconds."""
    remaining = iter(range(requests))
    connections = [await Connection.open(send.url) for _ in range(concurrency)]

    async def worker(connection: Connection) -> None:
        for _ in remaining:
            status, body = await send(connection)
            if status != expect:
                raise RuntimeError(f"{send.url}: {status} {body[:500]!r}")

    try:
        start = time.perf_counter()
        await asyncio.gather(*(worker(connection) for connection in connections))
        return time.perf_counter() - start
    finally:
        for connection in connections:
            await connection.close()


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


SLOW_BOUNDS_MS = (25, 50, 100, 200, 500)


def slow_histogram(latencies: list[float]) -> str:
    """How many requests took at least each of SLOW_BOUNDS_MS (and below the next): where the tail lies."""
    lines = []
    for low, high in itertools.pairwise((*SLOW_BOUNDS_MS, math.inf)):
        count = sum(low / 1000 <= latency < high / 1000 for latency in latencies)
        span = f">= {low} ms" if high == math.inf else f"{low}-{high} ms"
        lines.append(f"    {span:<12} {count:6d}  {100 * count / len(latencies):5.1f} %")
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(f"{figure:.2f}" for figure in os.getloadavg())


async def measure(photodrop_server: Server, key: str, baselines: dict[str, Server]) -> None:
    auth = {"authorization": f"Bearer {key}"}
    claims = itertools.count()
    servers = {"photodrop": photodrop_server, **baselines}
    sides = {
        name: (server, Poster(server.url, lambda: session_body(next(claims)), auth if name == "photodrop" else {}))
        for name, server in servers.items()
    }
    print(f"load average before: {load_average()}")
    results = await compare(
        sides, requests=REQUESTS, rounds=ROUNDS, warmup=WARMUP, concurrency=CONCURRENCY, loader=lean_load
    )
    print(f"load average after:  {load_average()}")
    print(f"{CONCURRENCY} connections, {REQUESTS} sessions a round, {ROUNDS} alternating rounds; rate limit off")
    ours = results["photodrop"]
    for name in servers:
        result, measured = results[name], sides[name][1].latencies[WARMUP:]
        quantiles = ", ".join(f"p{round(100 * q)} {1000 * percentile(measured, q):.1f}" for q in (0.5, 0.95, 0.99))
        print(
            f"  {name:<12} {REQUESTS / result.median_seconds:6.0f} req/s median ({REQUESTS / result.best_seconds:.0f}"
            f" best), {quantiles}, max {1000 * max(measured):.1f} ms,"
            f" server CPU {result.cpu_ms_per_request:.2f} ms/request"
        )
    for name in baselines:
        ratio = results[name].median_seconds / ours.median_seconds
        print(f"create_sessions: ratio {ratio:.2f} against {name} (medians)")
    print(f"photodrop's slow requests (mean latency {1000 * CONCURRENCY * ours.median_seconds / REQUESTS:.1f} ms):")
    print(slow_histogram(sides["photodrop"][1].latencies[WARMUP:]))
    with_password = Poster(photodrop_server.url, lambda: session_body(next(claims), password="correct horse"), auth)
    seconds = await lean_load(with_password, requests=PASSWORD_REQUESTS, concurrency=min(CONCURRENCY, 8))
    print(f"create_sessions with a password (argon2): photodrop {PASSWORD_REQUESTS / seconds:.1f} req/s")


def main() -> None:
    if sys.argv[1:2] == ["--serve-baseline"]:
        import uvicorn

        port, directory, journal = int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
        uvicorn.run(baseline_app(directory / "baseline.db", journal), host="127.0.0.1", port=port)
        return
    with tempfile.TemporaryDirectory(prefix="photodrop-bench-") as tmp:
        root = Path(tmp)
        (root / "baseline").mkdir()
        (root / "baseline-wal").mkdir()
        with (
            photodrop(root / "photodrop") as (ours, key),
            baseline(__file__, root / "baseline", "default") as theirs,
            baseline(__file__, root / "baseline-wal", "wal") as theirs_wal,
        ):
            asyncio.run(measure(ours, key, {"baseline": theirs, "baseline-wal": theirs_wal}))


if __name__ == "__main__":
    main()
