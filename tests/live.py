"""A real ``photodrop serve`` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def photodrop_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTODROP_")}
    env.update({"PHOTODROP_DATA_DIR": str(data_dir), **extra})
    return env


def photodrop_cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "photodrop", *args],
        env=photodrop_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class LiveServer:
    """A server process whose output is collected line by line as it runs."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()  # more `photodrop serve` options, e.g. ("--workers", "2")
    port: int = field(default_factory=free_port)
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None
    printed: threading.Condition = field(default_factory=threading.Condition)
    ended: bool = False  # the process closed its output; no more lines will come
    _ready: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        """Start the process and return once it serves."""
        return self.launch().ready()

    def launch(self) -> LiveServer:
        """Start the process without waiting for it: servers a test needs together then start at
        once, each spending its seconds of imports alongside the others', and ready() waits for each."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "photodrop", "serve", "--port", str(self.port), *self.args],
            env=photodrop_env(self.data_dir, **self.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._ready = threading.Event()
        self.reader = threading.Thread(target=self._drain, args=(self._ready,), daemon=True)
        self.reader.start()
        return self

    def ready(self) -> LiveServer:
        """Wait (at most 60 s) until the launched process serves, or fail with what it printed."""
        if not self._ready.wait(timeout=60):
            self.stop()
            raise RuntimeError("photodrop did not start:\n" + "".join(self.lines))
        return self

    def _drain(self, ready: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        # Uvicorn logs the app's start-up before it opens its socket ("Uvicorn running on" comes after,
        # or first from the supervisor of several workers): it serves once both are printed.
        awaited = {"Application startup complete", "Uvicorn running on"}
        for line in self.process.stdout:
            with self.printed:
                self.lines.append(line)
                self.printed.notify_all()
            awaited = {text for text in awaited if text not in line}
            if not awaited:
                ready.set()
        ready.set()  # the process ended; ready() returns and the test sees what it printed
        with self.printed:
            self.ended = True
            self.printed.notify_all()

    def wait_for_line(self, text: str, timeout: float = 30) -> str:
        """The first line printed so far or from now on that contains ``text``."""

        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        with self.printed:
            line = self.printed.wait_for(lambda: found() or self.ended, timeout)
        if not isinstance(line, str):
            raise AssertionError(f"no line with {text!r} in:\n" + "".join(self.lines))
        return line

    def stop(self) -> None:
        """Stop the server as an init system would (SIGTERM) and collect the rest of its output."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        if self.reader is not None:
            self.reader.join(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """Serve an app whose lifespan already runs with a real uvicorn server in this event loop.

    Tests can then reach it over real sockets and still look inside its services.
    """
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning")
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # "off": the test's LifespanManager runs it
    await server.startup()
    try:
        yield f"127.0.0.1:{config.port}"
    finally:
        await server.shutdown()
