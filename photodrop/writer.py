"""One writer thread per process for SQLite, committing the units queued meanwhile together.

SQLite takes one writer at a time, and what a commit costs (the lock, the WAL append) barely
grows with the number of rows in it. So the writes of many concurrent requests are queued to one
thread, which runs everything queued by the time it is free in one transaction, each unit inside
a savepoint of its own: a unit that fails rolls back only its own changes and raises to its
caller, the others commit. A unit's caller hears back only after the COMMIT, so a request
answers 2xx only for what is on disk (in the WAL: a process that crashes loses nothing
committed; ``synchronous=NORMAL``, the engine's setting, leaves the last commits to a power
loss: docs/deploy.md says what a 2xx promises).

A unit is a plain function of a SQLAlchemy ``Connection`` running Core statements: the same
function runs on PostgreSQL as one transaction of the async engine (``Database.run``).

The WAL's pages are copied back into the database file by a ``Checkpointer`` thread beside the
writer, not by the COMMIT that happens to cross SQLite's automatic checkpoint threshold.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[[Connection], T]

MAX_BATCH = 256  # units in one transaction: a bound on how long the first of them waits for its COMMIT
CHECKPOINT_INTERVAL = 0.2  # seconds between the checkpointer's passes
# SQLite's own checkpoint, run by the COMMIT that leaves the WAL this many pages long (4 KiB each): a
# backstop for a WAL the checkpointer cannot restart because writes never pause (SQLite's default is 1000).
AUTOCHECKPOINT_PAGES = 10_000


@dataclass
class _Job(Generic[T]):
    unit: Unit[T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return  # the caller stopped waiting; its unit committed (or failed) all the same
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class GroupWriter:
    """A thread with its own connection to ``engine`` (a synchronous SQLite engine whose ``begin``
    starts ``BEGIN IMMEDIATE``), started on the first unit and stopped by ``close``."""

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    async def run(self, unit: Unit[T]) -> T:
        """Run ``unit`` in the next group transaction; its result once that transaction committed."""
        return await self.submit(unit)

    def submit(self, unit: Unit[T]) -> asyncio.Future[T]:
        """Queue ``unit`` now; the future resolves once the transaction that ran it committed."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(unit, future, loop))
        return future

    async def close(self) -> None:
        """Let the queued units commit, then stop the thread."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join)
        self._thread = None
        self._engine.dispose()

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="photodrop-writer", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        with self._engine.connect() as conn:
            while True:
                batch, stopping = self._next_batch()
                if batch:
                    self._commit(conn, batch)
                if stopping:
                    return

    def _next_batch(self) -> tuple[list[_Job[Any]], bool]:
        """Wait for a unit, then take every unit queued behind it (up to the batch size)."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _commit(self, conn: Connection, batch: list[_Job[Any]]) -> None:
        outcomes: list[tuple[_Job[Any], Any, BaseException | None]] = []
        try:
            with conn.begin():
                if len(batch) == 1:
                    # Alone in its transaction, a unit needs no savepoint: a failure rolls it all back.
                    job = batch[0]
                    outcomes.append((job, job.unit(conn), None))
                else:
                    for job in batch:
                        outcomes.append(self._in_savepoint(conn, job))
        except Exception as exc:
            # BEGIN or COMMIT failed (or the lone unit did): nothing of the batch is stored.
            outcomes = [(job, None, exc) for job in batch]
        for job, result, error in outcomes:
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, result, error)
            except RuntimeError:
                pass  # that caller's event loop is closed: no one is left to tell

    @staticmethod
    def _in_savepoint(conn: Connection, job: _Job[Any]) -> tuple[_Job[Any], Any, BaseException | None]:
        # Straight to the driver: SQLAlchemy's nested-transaction bookkeeping costs more than the savepoint.
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("SAVEPOINT unit")
        try:
            result = job.unit(conn)
        except Exception as exc:
            driver.execute("ROLLBACK TO unit")
            driver.execute("RELEASE unit")
            return job, None, exc
        driver.execute("RELEASE unit")
        return job, result, None


class Checkpointer:
    """A thread with its own connection to ``engine`` (an on-disk SQLite database in WAL mode) that
    copies the committed pages of the WAL into the database file every ``interval`` seconds.

    SQLite's automatic checkpoint runs inside the COMMIT whose pages take the WAL past a threshold:
    two fsyncs and the copies, 10-30 ms here every few hundred sessions, during which that batch and
    every unit queued behind it waited. A PASSIVE checkpoint from another connection neither waits
    for nor blocks the writer or the readers, so the writer never pays for it. Once a pass has
    copied every frame, the next write starts the WAL over from its beginning; under writes that
    never pause long enough for that, the writer's connection keeps SQLite's automatic checkpoint
    at AUTOCHECKPOINT_PAGES as a bound, and by then it has only the last frames left to copy.

    A pass with nothing to copy takes a lock and reads a few bytes: an idle database costs nothing.
    What a checkpoint does not change is durability: a COMMIT reached the WAL before it answered.
    """

    def __init__(self, engine: Engine, *, interval: float = CHECKPOINT_INTERVAL) -> None:
        self._engine = engine
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.passes = 0  # completed passes, under ``passed`` (tests wait on it)
        self.passed = threading.Condition()

    def start(self) -> None:
        """Start the thread if it is not running (cheap when it is: every write calls this)."""
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._serve, name="photodrop-checkpointer", daemon=True)
                self._thread.start()

    async def close(self) -> None:
        """Stop the thread (a pass under way finishes first)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join)
            self._thread = None

    def _serve(self) -> None:
        with self._engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            while not self._stopping.wait(self._interval):
                try:
                    driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except Exception as exc:  # the next pass tries again; the backstop still bounds the WAL
                    log.warning("a WAL checkpoint failed: %s", exc)
                with self.passed:
                    self.passes += 1
                    self.passed.notify_all()
