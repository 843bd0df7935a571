"""Delivery throughput of photodrop's outbox worker (S3 and webhook) against direct clients.

photodrop, end to end through real processes: a ``photodrop serve`` with its in-process worker off
(``PHOTODROP_RUN_WORKER=false``) takes the uploads, so every Delivery row is pending and due before
the clock starts; then a ``photodrop worker`` process (concurrency 8, poll interval 0.05 s) is
started on the same data directory. The timed window runs from the moment the worker's metrics port answers
(it opens it right before its first lease) until the SQLite database, polled read-only every 10 ms, shows every delivery
of the round succeeded. The worker is the real CLI command with ``photodrop.delivery.s3`` imported
before it starts, and botocore's S3 model data loaded (by building one throwaway client from the
session photodrop's S3 clients share), as in a worker that has delivered once already (the cold import,
about 0.6 s, and the model data, about 0.2 s, would otherwise land in the window; they are a process's
start-up, paid once, not a delivery's cost). The S3 client for the bench's own destination is still
built in the window, by the first attempt, as a worker's first delivery to a new destination would.

- S3: sessions ``{"delivery_mode": "s3"}`` deliver to an s3 destination on moto's standalone server
  (its own process). Baseline: boto3 ``put_object`` of the same bytes, with the same content type,
  metadata and SHA-256 checksum, from one client shared by CONCURRENCY threads.
- Webhook: sessions with a webhook destination (``json_base64``, signed) POST to a bare Starlette
  receiver under uvicorn that reads the body and answers 200. Baseline: the same receiver and the
  same JSON bodies, pre-built, POSTed by CONCURRENCY keep-alive httpx clients.

Rounds alternate between photodrop and the baseline (``--rounds``, 5 by default); the ratio reported is
the median over rounds of photodrop's rate over the baseline's in the round beside it, with each side's
median rate and the delivering process's CPU time per image (the worker process; the benchmark process for
the baseline). Both sides keep CONCURRENCY requests in flight. ``--only s3|webhook`` runs one half;
``--profile DIR`` records each worker process with ``py-spy record --nonblocking`` (py-spy on the PATH)
into DIR, one file of collapsed stacks a round (flamegraph.pl or speedscope draw them).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
from _harness import Server, free_port, load, photodrop, photodrop_env, server, wait_until_up
from _photos import BOUNDARY, make_photos, multipart
from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CONCURRENCY = 8
S3_IMAGES = 64  # per round (photodrop delivers S3 slowly: see the CPU figure)
WEBHOOK_IMAGES = 200  # per round
ROUNDS = 5
SESSION_SIZE = 50
POLL_INTERVAL = 0.01
ROUND_TIMEOUT = 90.0
BUCKET = "photodrop-bench"
# The worker serves its metrics once its services are open, right before its first claim: the port
# answering is the ready signal (a socket, not a log line whose wording may change).
WORKER = (
    "import sys, photodrop.delivery.s3 as s3, photodrop.delivery.webhook\n"
    # botocore's S3 model data (service, endpoint rules, partitions), loaded once a process by its first client
    "s3._session.client('s3', region_name='us-east-1', aws_access_key_id='-', aws_secret_access_key='-')\n"
    "from photodrop.cli import main\n"
    "sys.exit(main(['worker', '--metrics-port', sys.argv[1]]))\n"
)


def webhook_body(photo: bytes, index: int) -> bytes:
    """The shape photodrop's ``json_base64`` webhook sends."""
    document = {
        "session_id": "sess_bench",
        "image_id": f"img_bench{index:04d}",
        "image_index": index,
        "mime_type": "image/jpeg",
        "filename": f"IMG_{index:04d}.jpg",
        "size_bytes": len(photo),
        "sha256": hashlib.sha256(photo).hexdigest(),
        "data": base64.b64encode(photo).decode(),
        "tags": {},
    }
    return json.dumps(document).encode()


# --- the helper servers: moto and a webhook receiver, each in its own process --------------------


def serve_moto(port: int) -> None:
    from moto.server import ThreadedMotoServer

    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    threading.Event().wait()  # until terminated


def receiver_app() -> Starlette:
    async def hook(request: Request) -> Response:
        await request.body()
        return Response(status_code=200)

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


# --- processes and the database --------------------------------------------------------------


def delivery_env(data_dir: Path) -> dict[str, str]:
    return photodrop_env(
        data_dir,
        PHOTODROP_RUN_WORKER="false",  # read by serve only; the worker process is the one that delivers
        PHOTODROP_DELIVERY_CONCURRENCY=str(CONCURRENCY),
        PHOTODROP_DELIVERY_POLL_INTERVAL="0.05",
        PHOTODROP_WEBHOOK_ALLOW_PRIVATE="true",
    )


@contextmanager
def worker(env: dict[str, str], log: Path, profile: Path | None = None) -> Iterator[tuple[Server, float]]:
    """A ``photodrop worker`` process; yields it with the perf_counter time its metrics port answered.
    With ``profile`` (a flame graph's path), py-spy samples it from start to end."""
    port = str(free_port())
    with log.open("wb") as out:
        command = [sys.executable, "-c", WORKER, port]
        if profile is not None:
            spy = shutil.which("py-spy") or "py-spy"
            sampling = ["--nonblocking", "--rate", "250", "--format", "raw", "-o", str(profile)]
            command = [spy, "record", *sampling, "--", *command]
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    pid = process.pid
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/metrics", log, "photodrop worker", poll=0.002)
        pid = pid if profile is None else child_of(pid)
        yield Server("worker", pid), time.perf_counter()
    finally:
        os.kill(pid, signal.SIGTERM)  # under py-spy, the worker itself: py-spy writes its graph once it exits
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def child_of(pid: int) -> int:
    """The one child process of ``pid`` (the worker py-spy started)."""
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])


def wait_delivered(db: Path, sessions: list[str], expected: int) -> int:
    """Poll until every delivery of ``sessions`` succeeded; the number of failed attempts on the way."""
    marks = ",".join("?" * len(sessions))
    deadline = time.monotonic() + ROUND_TIMEOUT
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        while True:
            rows = conn.execute(
                f"SELECT status, COUNT(*) FROM delivery WHERE session_id IN ({marks}) GROUP BY status", sessions
            ).fetchall()
            counts = dict(rows)
            if counts.get("failed"):
                error = conn.execute(
                    f"SELECT last_error FROM delivery WHERE status = 'failed' AND session_id IN ({marks})", sessions
                ).fetchone()
                raise RuntimeError(f"{counts['failed']} deliveries failed for good, e.g.: {error[0]}")
            if counts.get("succeeded", 0) >= expected:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"deliveries not done after {ROUND_TIMEOUT:g} s: {counts}")
            time.sleep(POLL_INTERVAL)
        failed_attempts = conn.execute(
            "SELECT COUNT(*) FROM delivery_attempt a JOIN delivery d ON a.delivery_id = d.id "
            f"WHERE NOT a.succeeded AND d.session_id IN ({marks})",
            sessions,
        ).fetchone()[0]
    return int(failed_attempts)


# --- the benchmark -------------------------------------------------------------------------


@dataclass
class Side:
    cpu_seconds: float = 0.0
    images: int = 0
    failed_attempts: int = 0
    rounds: list[float] = field(default_factory=list)  # the rate of each round, in order

    def add(self, seconds: float, cpu: float, images: int) -> None:
        self.cpu_seconds += cpu
        self.images += images
        self.rounds.append(images / seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / self.images


@dataclass
class Bench:
    root: Path
    env: dict[str, str]
    photodrop_url: str
    key: str
    moto_url: str
    receiver_url: str
    rounds: int = ROUNDS
    only: str | None = None
    profile: Path | None = None
    photos: list[bytes] = field(default_factory=lambda: make_photos((1024, 768), (10, 12, 14, 16), 85))

    @property
    def db(self) -> Path:
        return Path(self.env["PHOTODROP_DATA_DIR"]) / "photodrop.db"

    def s3_client(self) -> Any:
        config = BotoConfig(retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=CONCURRENCY)
        return boto3.session.Session().client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
        )

    async def setup(self) -> tuple[str, str]:
        """The two destinations: s3 (the project's default of its kind) and the webhook receiver."""
        s3 = {
            "bucket": BUCKET,
            "endpoint_url": self.moto_url,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "region": "us-east-1",
        }
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {self.key}"}, timeout=60) as client:
            ids = []
            for body in (
                {"kind": "s3", "name": "bench", "config": s3},
                {"kind": "webhook", "name": "bench-hook", "config": {"url": f"{self.receiver_url}/hook"}},
            ):
                response = await client.post(f"{self.photodrop_url}/v1/destinations", json=body)
                response.raise_for_status()
                ids.append(response.json()["id"])
        return ids[0], ids[1]

    async def upload(self, session_body: dict[str, Any], count: int) -> list[str]:
        """``count`` uploads, the photos in turn, into fresh sessions of SESSION_SIZE; their ids."""
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {self.key}"}, timeout=60) as client:
            sessions = []
            for _ in range(math.ceil(count / SESSION_SIZE)):
                response = await client.post(f"{self.photodrop_url}/v1/sessions", json=session_body)
                response.raise_for_status()
                sessions.append(response.json()["id"])
        bodies = [multipart(photo, index) for index, photo in enumerate(self.photos)]
        picks = itertools.cycle(bodies)
        targets = iter([session for session in sessions for _ in range(SESSION_SIZE)])
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

        async def send(client: httpx.AsyncClient) -> httpx.Response:
            url = f"{self.photodrop_url}/api/v1/upload/{next(targets)}/images"
            return await client.post(url, content=next(picks), headers=headers)

        await load(send, requests=count, concurrency=CONCURRENCY)
        return sessions

    def photodrop_round(self, name: str, session_body: dict[str, Any], count: int, side: Side) -> list[str]:
        sessions = asyncio.run(self.upload(session_body, count))
        number = len(side.rounds)
        profile = self.profile / f"worker-{name}-{number}.txt" if self.profile else None
        with worker(self.env, self.root / f"worker-{name}-{number}.log", profile) as (running, started):
            cpu = running.cpu_seconds()
            side.failed_attempts += wait_delivered(self.db, sessions, count)
            seconds = time.perf_counter() - started
            side.add(seconds, running.cpu_seconds() - cpu, count)
        return sessions

    def s3_baseline_round(self, client: Any, count: int, side: Side, prefix: str) -> None:

        def put(index: int) -> None:
            photo = self.photos[index % len(self.photos)]
            digest = hashlib.sha256(photo)
            client.put_object(
                Bucket=BUCKET,
                Key=f"{prefix}/{index:03d}.jpg",
                Body=photo,
                ContentType="image/jpeg",
                Metadata={"image-index": str(index), "sha256": digest.hexdigest()},
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
            )

        cpu = time.process_time()
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            list(pool.map(put, range(count)))
        side.add(time.perf_counter() - start, time.process_time() - cpu, count)
        stored = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")["KeyCount"]
        assert stored == count, f"the bucket holds {stored} baseline objects, not {count}"

    def webhook_baseline_round(self, count: int, side: Side) -> None:
        bodies = [webhook_body(photo, index) for index, photo in enumerate(self.photos)]
        picks = itertools.cycle(bodies)
        headers = {"Content-Type": "application/json"}

        async def send(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(f"{self.receiver_url}/hook", content=next(picks), headers=headers)

        cpu = time.process_time()
        seconds = asyncio.run(load(send, requests=count, concurrency=CONCURRENCY, expect=200))
        side.add(seconds, time.process_time() - cpu, count)

    def run(self) -> None:
        client = self.s3_client()
        client.create_bucket(Bucket=BUCKET)
        _, hook = asyncio.run(self.setup())
        mean = sum(map(len, self.photos)) / len(self.photos)
        print(f"{len(self.photos)} JPEGs of 1024x768, {mean / 1e3:.0f} KB on average; ", end="")
        print(f"{CONCURRENCY} in flight on both sides; medians of {self.rounds} alternating rounds")
        print("photodrop runs with PHOTODROP_RATE_LIMIT_PER_MINUTE=0 (the per-key rate limit is off)")
        print("method: end to end; uploads through `photodrop serve` (its worker off), then a `photodrop worker`")
        print("  process, timed from when its metrics port answers (its ready signal) until the database shows")
        print("  every delivery of the round succeeded")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if self.only in (None, "s3"):
            self.run_s3(client)
        if self.only in (None, "webhook"):
            self.run_webhook(hook)
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    def run_s3(self, client: Any) -> None:
        # warm the baseline client's connections, as a long-running worker's would be
        self.s3_baseline_round(client, CONCURRENCY, Side(), "warm-up")
        s3_session = {"delivery_mode": "s3", "max_images": SESSION_SIZE}
        ours, theirs = Side(), Side()
        for _ in range(self.rounds):
            for session in self.photodrop_round("s3", s3_session, S3_IMAGES, ours):
                listed = client.list_objects_v2(Bucket=BUCKET, Prefix=session + "/")["KeyCount"]
                assert listed == SESSION_SIZE or listed == S3_IMAGES % SESSION_SIZE, f"{session}: {listed} objects"
            self.s3_baseline_round(client, S3_IMAGES, theirs, f"baseline/{len(theirs.rounds)}")
        self.report("s3", "images/s", "direct boto3", S3_IMAGES, ours, theirs)

    def run_webhook(self, hook: str) -> None:
        # named destination, no webhook_url: no session status notifications share the worker
        hook_session = {"destination_ids": [hook], "max_images": SESSION_SIZE}
        self.webhook_baseline_round(CONCURRENCY, Side())  # warm-up
        ours, theirs = Side(), Side()
        for _ in range(self.rounds):
            self.photodrop_round("webhook", hook_session, WEBHOOK_IMAGES, ours)
            self.webhook_baseline_round(WEBHOOK_IMAGES, theirs)
        self.report("webhook", "deliveries/s", "raw httpx", WEBHOOK_IMAGES, ours, theirs)

    @staticmethod
    def report(name: str, unit: str, baseline: str, images: int, ours: Side, theirs: Side) -> None:
        every = ", ".join(f"{rate:.1f}" for rate in ours.rounds)
        every_theirs = ", ".join(f"{rate:.1f}" for rate in theirs.rounds)
        print(f"{name}: {images} a round; photodrop rounds {every} {unit}; {baseline} rounds {every_theirs} {unit}")
        ratio = statistics.median(a / b for a, b in zip(ours.rounds, theirs.rounds, strict=True))
        print(
            f"{name}: photodrop {ours.median:.1f} {unit}, {baseline} {theirs.median:.1f} {unit} (medians); "
            f"ratio {ratio:.2f} (median of the rounds' ratios)"
        )
        print(
            f"{name} CPU per image: photodrop worker {ours.cpu_ms:.1f} ms, {baseline} {theirs.cpu_ms:.1f} ms; "
            f"failed attempts (retried): {ours.failed_attempts}"
        )


def main() -> None:
    if sys.argv[1:2] == ["--serve-moto"]:
        serve_moto(int(sys.argv[2]))
        return
    if sys.argv[1:2] == ["--serve-receiver"]:
        import uvicorn

        uvicorn.run(receiver_app(), host="127.0.0.1", port=int(sys.argv[2]), access_log=False)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating rounds a side")
    parser.add_argument("--only", choices=["s3", "webhook"], help="run one half")
    parser.add_argument("--profile", type=Path, help="record each worker with py-spy into this directory")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="photodrop-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        moto = stack.enter_context(server([sys.executable, __file__, "--serve-moto", "{port}"], root / "moto.log"))
        receiver = stack.enter_context(
            server([sys.executable, __file__, "--serve-receiver", "{port}"], root / "receiver.log")
        )
        env = delivery_env(root / "photodrop")
        serve, key = stack.enter_context(photodrop(root / "photodrop", env))
        bench = Bench(root, env, serve.url, key, moto.url, receiver.url, args.rounds, args.only, args.profile)
        bench.run()


if __name__ == "__main__":
    main()
