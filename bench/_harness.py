"""What both benchmarks share: loopback server processes and a fixed-count concurrent load."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far, all threads (Linux only, else NaN)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return math.nan
        fields = stat.rsplit(")", 1)[1].split()  # fields from the 3rd on: utime and stime are the 14th and 15th
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> float:
        """The server process's resident set size in KiB, VmRSS in /proc (Linux only, else NaN)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return math.nan
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1])
        return math.nan


@dataclass
class Result:
    best_seconds: float = math.inf  # the fastest round
    round_seconds: list[float] = field(default_factory=list)  # every measured round, in order
    cpu_seconds: float = 0.0  # server CPU over every measured round
    requests: int = 0  # over every measured round

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.round_seconds)

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_seconds / self.requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


STARTUP_TIMEOUT = float(os.environ.get("BENCH_STARTUP_TIMEOUT", "60"))  # seconds; a crowded machine may need more


class CannotStart(RuntimeError):
    """A process the benchmark needs never came up: the bench measured nothing and must fail loudly."""


def wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path, name: str, *, poll: float = 0.1) -> None:
    """Return once ``url`` answers any HTTP response; CannotStart if ``process`` exits or the time runs out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            raise CannotStart(f"{name} exited with {process.returncode} before it was up; its log:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                process.kill()
                raise CannotStart(
                    f"{name} was not up at {url} after {STARTUP_TIMEOUT:g} s; its log:\n{log.read_text()}"
                ) from None
            time.sleep(poll)


@contextmanager
def server(command: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run ``command`` (which must serve on the ``{port}`` it is given) until the block ends.

    Output goes to ``log``, never a pipe, so a chatty access log cannot stall the server.
    """
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [part.format(port=port) for part in command], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, url + "/", log, " ".join(command[:4]))
        yield Server(url, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def photodrop_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment minus its own PHOTODROP_* settings, plus the benchmark's.

    The per-key rate limit is off: a benchmark sends one key's requests far faster than a client may.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTODROP_")}
    env.update(PHOTODROP_DATA_DIR=str(data_dir), PHOTODROP_RATE_LIMIT_PER_MINUTE="0", **settings)
    return env


@contextmanager
def photodrop(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[tuple[Server, str]]:
    """A ``photodrop serve`` on a fresh data directory, and the live key it prints on first start.

    ``env`` defaults to ``photodrop_env(data_dir)``; pass one made by it to change settings.
    """
    env = env or photodrop_env(data_dir)
    log = data_dir.parent / f"{data_dir.name}.log"
    with server([sys.executable, "-m", "photodrop", "serve", "--port", "{port}"], log, env) as running:
        keys = [line.strip() for line in log.read_text().splitlines() if line.startswith("  aptr_live_")]
        if not keys:
            raise CannotStart(f"photodrop printed no API key:\n{log.read_text()}")
        yield running, keys[0]


def baseline(script: str, directory: Path, *args: str) -> AbstractContextManager[Server]:
    """The calling script run as ``script --serve-baseline PORT DIR [ARGS...]``."""
    command = [sys.executable, script, "--serve-baseline", "{port}", str(directory), *args]
    return server(command, directory / "server.log")


async def load(send: Send, *, requests: int, concurrency: int, expect: int = 201) -> float:
    """Send ``requests`` requests from ``concurrency`` keep-alive clients; the wall time in seconds."""
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def worker() -> None:
            for _ in remaining:
                response = await send(client)
                if response.status_code != expect:
                    raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:500]}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


Loader = Callable[..., Awaitable[float]]  # like ``load``: (send, *, requests, concurrency) -> wall seconds


async def compare(
    sides: Mapping[str, tuple[Server, Any]],
    *,
    requests: int,
    rounds: int,
    warmup: int,
    concurrency: int,
    loader: Loader = load,
) -> dict[str, Result]:
    """Warm every side up, then alternate measured rounds between them so drift hits all alike.

    ``loader`` sends each round (``load`` by default; a bench whose client would cost more CPU than
    the servers it measures brings a leaner one, and its sides' ``send`` functions to match).
    """
    for _, send in sides.values():
        await loader(send, requests=warmup, concurrency=concurrency)
    results = {name: Result() for name in sides}
    for _ in range(rounds):
        for name, (running, send) in sides.items():
            cpu = running.cpu_seconds()
            seconds = await loader(send, requests=requests, concurrency=concurrency)
            result = results[name]
            result.best_seconds = min(result.best_seconds, seconds)
            result.round_seconds.append(seconds)
            result.cpu_seconds += running.cpu_seconds() - cpu
            result.requests += requests
    return results
