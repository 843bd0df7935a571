"""Upload ingest throughput (MB/s of photo bytes) of photodrop against a bare baseline.

photodrop: ``POST /api/v1/upload/{session}/images`` on a real ``photodrop serve`` process; the
requests rotate over sessions created with ``max_images`` 50, one JPEG per request. Each upload
is spooled to disk, hashed and structurally checked in one pass, moved into staging and
committed as Image, Delivery and Event rows in SQLite.

Baseline: a bare Starlette app under the same uvicorn defaults whose one endpoint streams the
multipart body through python-multipart into a file while hashing it with sha256, then answers
201 with JSON: the least work that still lands a photo on disk with its digest.

Both servers get the same load: CONCURRENCY keep-alive httpx clients sending the same
pre-encoded multipart bodies of realistic 3000x2000 quality-90 JPEGs (about 2-3 MB each).
Rounds alternate between the two servers; the ratio is of each side's median round (the best
rounds are printed too), along with the server process's CPU time per upload (all threads), which
holds up better on a busy machine.

Then memory: BIG_UPLOADS uploads of one ~20 MB JPEG (6000x4400, just under the 20 MiB default
limit), CONCURRENCY at a time, with photodrop's resident set size read after every tranche of 20.
Streaming ingest keeps it flat: no upload's bytes or pixels are held in memory as a whole.

photodrop runs with its per-key rate limit off (PHOTODROP_RATE_LIMIT_PER_MINUTE=0): one key sends
far more uploads here than a client may.

``--rounds N`` changes the number of alternating rounds; ``--profile FILE`` samples photodrop's
server with ``py-spy record --nonblocking`` (py-spy on the PATH) over the measured rounds, writing
collapsed stacks to FILE; ``--no-memory`` skips the 20 MB part.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
from _harness import Server, baseline, compare, load, photodrop
from _photos import BOUNDARY, make_photos, multipart
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CONCURRENCY = 8
REQUESTS = 80  # per round
ROUNDS = 5
WARMUP = 4
SESSION_SIZE = 50
BIG_UPLOADS = 100
RSS_EVERY = 20


# --- the baseline server -------------------------------------------------------------------


class _Sink:
    """Each multipart part to its own file, hashed and measured as it streams in."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.saved: list[dict[str, object]] = []
        self._handle: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._size = 0

    def on_part_begin(self) -> None:
        fd, _ = tempfile.mkstemp(dir=self.directory, suffix=".part")
        self._handle = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._size = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._handle is not None
        chunk = data[start:end]
        self._handle.write(chunk)
        self._hash.update(chunk)
        self._size += len(chunk)

    def on_part_end(self) -> None:
        assert self._handle is not None
        self._handle.close()
        self.saved.append({"sha256": self._hash.hexdigest(), "size_bytes": self._size})


def baseline_app(directory: Path) -> Starlette:
    async def upload(request: Request) -> Response:
        _, options = parse_options_header(request.headers["content-type"])
        sink = _Sink(directory)
        parser = MultipartParser(
            options[b"boundary"],
            {"on_part_begin": sink.on_part_begin, "on_part_data": sink.on_part_data, "on_part_end": sink.on_part_end},
        )
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        return JSONResponse({"images": sink.saved}, status_code=201)

    return Starlette(routes=[Route("/upload", upload, methods=["POST"])])


# --- the benchmark -------------------------------------------------------------------------


async def create_sessions(url: str, key: str, count: int) -> list[str]:
    body = {"delivery_mode": "poll", "max_images": SESSION_SIZE}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as client:
        ids = []
        for _ in range(count):
            response = await client.post(f"{url}/v1/sessions", json=body)
            response.raise_for_status()
            ids.append(response.json()["id"])
        return ids


@contextmanager
def sampled(pid: int, profile: Path | None) -> Iterator[None]:
    """With ``profile``, py-spy records process ``pid`` until the block ends (collapsed stacks into it)."""
    if profile is None:
        yield
        return
    spy = shutil.which("py-spy") or "py-spy"
    command = [spy, "record", "--nonblocking", "--format", "raw", "-o", str(profile), "--pid", str(pid)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its stacks as it stops
        process.wait(timeout=60)


async def measure(
    photodrop_server: Server, key: str, baseline_server: Server, *, rounds: int, profile: Path | None, memory: bool
) -> None:
    photos = make_photos((3000, 2000), (14, 18, 22, 26), 90)
    bodies = [multipart(photo, index) for index, photo in enumerate(photos)]
    assert REQUESTS % len(photos) == WARMUP % len(photos) == 0, "every round sends each photo equally often"
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    picks = itertools.cycle(range(len(bodies)))
    sessions = await create_sessions(photodrop_server.url, key, math.ceil((WARMUP + rounds * REQUESTS) / SESSION_SIZE))
    next_session = itertools.cycle(sessions)  # round robin: no session gets more than SESSION_SIZE

    async def to_photodrop(client: httpx.AsyncClient) -> httpx.Response:
        target = f"{photodrop_server.url}/api/v1/upload/{next(next_session)}/images"
        return await client.post(target, content=bodies[next(picks)], headers=headers)

    async def to_baseline(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(f"{baseline_server.url}/upload", content=bodies[next(picks)], headers=headers)

    sides = {"photodrop": (photodrop_server, to_photodrop), "baseline": (baseline_server, to_baseline)}
    with sampled(photodrop_server.pid, profile):
        results = await compare(sides, requests=REQUESTS, rounds=rounds, warmup=WARMUP, concurrency=CONCURRENCY)
    mean = sum(map(len, photos)) / len(photos)
    ours, theirs = (REQUESTS * mean / results[side].median_seconds / 1e6 for side in sides)
    best_ours, best_theirs = (REQUESTS * mean / results[side].best_seconds / 1e6 for side in sides)
    print("photodrop runs with PHOTODROP_RATE_LIMIT_PER_MINUTE=0 (the per-key rate limit off)")
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"{len(photos)} JPEGs of 3000x2000, {mean / 1e6:.2f} MB on average; {CONCURRENCY} clients, ", end="")
    print(f"{REQUESTS} uploads a round, {rounds} alternating rounds each (MB = 10^6 bytes)")
    print(f"ingest (median round): photodrop {ours:.1f} MB/s, baseline {theirs:.1f} MB/s, ratio {ours / theirs:.2f}")
    print(f"ingest (best round): photodrop {best_ours:.1f} MB/s, baseline {best_theirs:.1f} MB/s, ", end="")
    print(f"ratio {best_ours / best_theirs:.2f}")
    cpu = [results[side].cpu_ms_per_request for side in sides]
    print(f"server CPU per upload: photodrop {cpu[0]:.1f} ms, baseline {cpu[1]:.1f} ms")
    if memory:
        await measure_memory(photodrop_server, key)


async def measure_memory(photodrop_server: Server, key: str) -> None:
    """photodrop's RSS while it takes BIG_UPLOADS photos of ~20 MB each; flat is the goal."""
    big = make_photos((6000, 4400), (26,), 95)[0]  # just under the 20 MiB default limit
    body = multipart(big, 0)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    sessions = await create_sessions(photodrop_server.url, key, math.ceil(BIG_UPLOADS / SESSION_SIZE))
    targets = iter([session for session in sessions for _ in range(SESSION_SIZE)])

    async def send(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            f"{photodrop_server.url}/api/v1/upload/{next(targets)}/images", content=body, headers=headers
        )

    readings = [photodrop_server.rss_kib() / 1024]
    for _ in range(BIG_UPLOADS // RSS_EVERY):
        await load(send, requests=RSS_EVERY, concurrency=CONCURRENCY)
        readings.append(photodrop_server.rss_kib() / 1024)
    steps = ", ".join(f"{mib:.0f}" for mib in readings)
    print(f"memory: {BIG_UPLOADS} uploads of {len(big) / 1e6:.1f} MB, {CONCURRENCY} at a time; ", end="")
    print(f"photodrop RSS every {RSS_EVERY} uploads: {steps} MiB (growth after the first tranche: ", end="")
    print(f"{readings[-1] - readings[1]:+.0f} MiB)")


def main() -> None:
    if sys.argv[1:2] == ["--serve-baseline"]:
        import uvicorn

        uvicorn.run(baseline_app(Path(sys.argv[3])), host="127.0.0.1", port=int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating rounds a side")
    parser.add_argument("--profile", type=Path, help="record photodrop's server with py-spy into this file")
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS run of 20 MB uploads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="photodrop-bench-") as tmp:
        root = Path(tmp)
        (root / "baseline").mkdir()
        with photodrop(root / "photodrop") as (ours, key), baseline(__file__, root / "baseline") as theirs:
            run = measure(ours, key, theirs, rounds=args.rounds, profile=args.profile, memory=not args.no_memory)
            asyncio.run(run)


if __name__ == "__main__":
    main()
