"""Real ``photodrop worker`` and ``photodrop serve`` processes: SIGTERM, command-line flags, worker metrics."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.models import Delivery, DeliveryStatus
from photodrop.resolvers.deliveries import attempts_of
from tests.conftest import bearer, engine_env, image_bytes, make_settings, new_session, upload
from tests.delivery.receiver import Receiver, receiving
from tests.live import LiveServer, free_port, photodrop_cli, photodrop_env


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The in-process app only takes uploads; the worker processes under test deliver them."""
    return make_settings(tmp_path, webhook_allow_private=True)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running
        if running.hold is not None:
            running.hold.set()  # let a held request end, or the receiver's server waits for it forever


@dataclass
class WorkerProcess:
    """``photodrop worker`` on the test's data directory, its JSON log lines collected as they come."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    printed: threading.Condition = field(default_factory=threading.Condition)
    ended: bool = False

    @classmethod
    def start(cls, data_dir: Path, *args: str, **env: str) -> WorkerProcess:
        settings = {"PHOTODROP_WEBHOOK_ALLOW_PRIVATE": "true", "PHOTODROP_DELIVERY_POLL_INTERVAL": "0.1", **env}
        process = subprocess.Popen(
            [sys.executable, "-m", "photodrop", "worker", *args],
            env=photodrop_env(data_dir, **settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        worker = cls(process)
        threading.Thread(target=worker._drain, daemon=True).start()
        return worker

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.printed:
                self.lines.append(line)
                self.printed.notify_all()
        self.process.stderr.close()
        with self.printed:
            self.ended = True
            self.printed.notify_all()

    def logged(self) -> list[dict[str, Any]]:
        """Every line the worker wrote, parsed: each one must be a JSON object."""
        return [json.loads(line) for line in self.lines]

    def wait_for(self, text: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((entry for entry in self.logged() if text in entry["message"]), None)

        with self.printed:
            entry = self.printed.wait_for(lambda: found() or self.ended, timeout=60)
        if not isinstance(entry, dict):
            raise AssertionError(f"the worker never logged {text!r}:\n" + "".join(self.lines))
        return entry

    async def terminated(self) -> int:
        """Send SIGTERM as an init system would."""
        self.process.send_signal(signal.SIGTERM)
        return await self.exited()

    async def exited(self) -> int:
        """The exit code, once every line the worker wrote has been read."""
        return await anyio.to_thread.run_sync(self._collect)

    def _collect(self) -> int:
        code = self.process.wait(timeout=60)
        with self.printed:
            self.printed.wait_for(lambda: self.ended, timeout=60)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


async def _deliveries(services: Services) -> list[Delivery]:
    async with services.db.read() as s:
        return list((await s.exec(select(Delivery).order_by(Delivery.created_at))).all())


async def _held_delivery(
    client: httpx.AsyncClient,
    key: str,
    services: Services,
    receiver: Receiver,
    workers: list[WorkerProcess],
    *args: str,
    **env: str,
) -> WorkerProcess:
    """An uploaded photo, and a worker process (added to ``workers``) sending it, whose POST the receiver holds."""
    receiver.hold = anyio.Event()  # type: ignore[assignment]
    session = await new_session(client, key, delivery_mode="webhook", webhook_url=receiver.url)
    assert (await upload(client, session["id"])).status_code == 201
    worker = WorkerProcess.start(services.settings.data_dir, *args, **env, **engine_env(services.settings))
    workers.append(worker)
    with anyio.fail_after(60):
        await receiver.holding.wait()
    return worker


@pytest.mark.anyio
async def test_sigterm_hands_back_a_delivery_the_grace_cannot_finish(
    client: httpx.AsyncClient,
    key: str,
    services: Services,
    receiver: Receiver,
    workers: list[WorkerProcess],
) -> None:
    worker = await _held_delivery(client, key, services, receiver, workers, PHOTODROP_SHUTDOWN_TIMEOUT="0")
    assert (await _deliveries(services))[0].status is DeliveryStatus.SENDING
    assert await worker.terminated() == 0
    (delivery,) = await _deliveries(services)
    assert delivery.status is DeliveryStatus.PENDING  # free for the next worker at once, not in a minute
    assert delivery.lease_owner is None and delivery.lease_expires_at is None
    assert delivery.attempts == 0  # an interrupted attempt is not a failed one
    handed = next(entry for entry in worker.logged() if entry["message"].startswith("handed back"))
    assert handed["deliveries"] == 1


@pytest.mark.anyio
async def test_sigterm_lets_the_delivery_in_flight_finish_and_claims_nothing_more(
    client: httpx.AsyncClient,
    key: str,
    services: Services,
    receiver: Receiver,
    workers: list[WorkerProcess],
) -> None:
    # One delivery at a time: while the first is held the worker has no room to claim anything else.
    worker = await _held_delivery(
        client, key, services, receiver, workers, "--concurrency", "1", PHOTODROP_SHUTDOWN_TIMEOUT="120"
    )
    session_id = (await _deliveries(services))[0].session_id
    worker.process.send_signal(signal.SIGTERM)
    await anyio.to_thread.run_sync(worker.wait_for, "stopping: no new deliveries")
    assert (await upload(client, session_id)).status_code == 201  # arrives after the worker began to stop
    receiver.hold.set()
    assert await worker.exited() == 0
    first, second = await _deliveries(services)
    assert first.status is DeliveryStatus.SUCCEEDED and first.attempts == 1
    assert second.status is DeliveryStatus.PENDING and second.attempts == 0 and second.lease_owner is None
    assert len(receiver.received) == 1
    assert all(entry["level"] in {"debug", "info", "warning"} for entry in worker.logged())


@pytest.mark.anyio
async def test_a_worker_serves_its_own_metrics(
    client: httpx.AsyncClient,
    key: str,
    services: Services,
    receiver: Receiver,
    workers: list[WorkerProcess],
) -> None:
    port = free_port()
    worker = WorkerProcess.start(
        services.settings.data_dir, "--metrics-port", str(port), **engine_env(services.settings)
    )
    workers.append(worker)
    await anyio.to_thread.run_sync(worker.wait_for, "delivering with concurrency")
    session = await new_session(client, key, delivery_mode="webhook", webhook_url=receiver.url)
    assert (await upload(client, session["id"])).status_code == 201
    with anyio.fail_after(60):
        await receiver.wait_for(1)
    async with httpx.AsyncClient() as http:
        with anyio.fail_after(60):
            while True:  # the worker records the attempt just after the answer; nothing tells this process
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                samples = {
                    (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                }
                done = (("kind", "webhook"), ("outcome", "succeeded"))
                if samples.get(("photodrop_delivery_attempts_total", done)) == 1:
                    break
                await anyio.sleep(0.05)
    assert await worker.terminated() == 0


async def _changed(services: Services, delivery: Delivery) -> Delivery:
    """The delivery once its lease has moved from where ``delivery`` saw it (renewed, or retaken)."""
    with anyio.fail_after(60):
        while True:  # another process holds the lease; nothing tells this one when it moves
            (now,) = await _deliveries(services)
            if (now.lease_owner, now.lease_expires_at) != (delivery.lease_owner, delivery.lease_expires_at):
                return now
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_a_live_worker_keeps_its_short_lease_and_a_killed_ones_delivery_is_retaken(
    client: httpx.AsyncClient,
    key: str,
    services: Services,
    receiver: Receiver,
    workers: list[WorkerProcess],
) -> None:
    lease = {"PHOTODROP_DELIVERY_LEASE_SECONDS": "3", **engine_env(services.settings)}
    workers.extend(WorkerProcess.start(services.settings.data_dir, **lease) for _ in range(2))
    for worker in workers:  # both ready first, so the held attempt's 30 s timeout covers only what follows
        await anyio.to_thread.run_sync(worker.wait_for, "delivering with concurrency")
    receiver.hold = anyio.Event()  # type: ignore[assignment]
    session = await new_session(client, key, delivery_mode="webhook", webhook_url=receiver.url)
    assert (await upload(client, session["id"])).status_code == 201
    with anyio.fail_after(60):
        await receiver.holding.wait()
    (held,) = await _deliveries(services)
    assert held.lease_owner is not None
    (first,) = [worker for worker in workers if f":{worker.process.pid}:" in held.lease_owner]
    (second,) = [worker for worker in workers if worker is not first]

    # The attempt outlasts its three-second lease: the heartbeat of the worker sending it renews it,
    # so the other worker, polling all along, does not take it over while the first one lives.
    renewed = await _changed(services, held)
    assert renewed.lease_owner == held.lease_owner and renewed.status is DeliveryStatus.SENDING
    assert len(receiver.received) == 1, first.lines + second.lines

    first.kill()  # SIGKILL: no hand-back; its lease lapses within seconds and the second worker retakes it
    hold, receiver.hold = receiver.hold, None
    hold.set()  # the answer goes to a dead socket: that attempt never completed
    with anyio.fail_after(60):
        again = (await receiver.wait_for(2))[1]
    assert again.headers["webhook-id"] == receiver.received[0].headers["webhook-id"] == held.id
    assert await second.terminated() == 0  # a clean stop records what finished before handing back
    (delivery,) = await _deliveries(services)
    assert delivery.status is DeliveryStatus.SUCCEEDED and delivery.attempts == 1 and delivery.lease_owner is None
    (attempt,) = await attempts_of(services, delivery.id)  # the killed worker never got to record one
    assert f":{second.process.pid}:" in attempt.worker


@pytest.mark.parametrize(
    "args",
    [["serve", "--workers", "0"], ["serve", "--workers", "two"], ["worker", "--concurrency", "0"]],
)
def test_the_commands_refuse_nonsense_counts(tmp_path: Path, args: list[str]) -> None:
    result = photodrop_cli(tmp_path / "data", *args)
    assert result.returncode == 2
    assert "usage: photodrop" in result.stderr and args[-2] in result.stderr


def _read_until(sock: socket.socket, marker: bytes | None = None) -> bytes:
    """What arrives until ``marker`` has, or (without one) until the server closes the connection."""
    data = b""
    while marker is None or marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_sigterm_lets_an_upload_in_flight_finish_and_refuses_new_connections(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", env={"PHOTODROP_SHUTDOWN_TIMEOUT": "120"}, args=("--no-worker",)).start()
    try:
        server.wait_for_line("delivery: left to `photodrop worker`")
        key = photodrop_cli(server.data_dir, "keys", "create").stdout.strip().splitlines()[-1]
        session = httpx.post(f"{server.url}/v1/sessions", json={"delivery_mode": "poll"}, headers=bearer(key)).json()
        files = {"file": ("slow.jpg", image_bytes("JPEG", (400, 300)), "image/jpeg")}
        prepared = httpx.Request("POST", f"{server.url}/api/v1/upload/{session['id']}/images", files=files)
        body = prepared.read()
        head = (
            f"POST /api/v1/upload/{session['id']}/images HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: {prepared.headers['content-type']}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(head.encode())
            # The server says 100 Continue only once the upload handler starts reading the body.
            assert _read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100")
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            server.wait_for_line("Waiting for connections to close")
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", server.port), timeout=10).close()
            sock.sendall(body)
            response = _read_until(sock)  # a server on its way out closes the connection after answering
        status_line, _, rest = response.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 201"), response
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["mime_type"] == "image/jpeg"
        # uvicorn finishes its graceful shutdown, then ends by the signal it caught, as init systems expect.
        assert server.process.wait(timeout=60) == -signal.SIGTERM
        server.wait_for_line("Application shutdown complete")
    finally:
        server.stop()
