"""The database's engine: the driver a URL names, and PostgreSQL pools sized from the settings."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import anyio
import pytest
from sqlalchemy import event, text
from sqlalchemy.pool import QueuePool

from photodrop.db import Database
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg"])
async def test_every_postgres_spelling_runs_on_asyncpg(scheme: str) -> None:
    database = Database(f"{scheme}://photodrop@127.0.0.1:9/photodrop")
    assert database.engine.dialect.driver == "asyncpg" and not database.is_sqlite
    await database.dispose()


async def test_the_pool_is_sized_from_the_settings(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        database_url="postgresql://photodrop@127.0.0.1:9/photodrop",
        database_pool_size=3,
        database_max_overflow=7,
        database_pool_timeout=4.5,
    )
    database = Database.from_settings(settings)
    pool = database.engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 7, 4.5)
    await database.dispose()


def test_pool_settings_refuse_nonsense(tmp_path: Path) -> None:
    for bad in ({"database_pool_size": 0}, {"database_max_overflow": -1}, {"database_pool_timeout": 0}):
        with pytest.raises(ValueError, match="greater than"):
            make_settings(tmp_path, **bad)


async def test_a_burst_of_sqlite_reads_reuses_its_connections(tmp_path: Path) -> None:
    """Twelve reads at once, twice: the second burst opens no connection, as a pool of SQLAlchemy's
    default five (the rest overflow, closed on return) would, each with its thread and PRAGMAs."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'burst.sqlite'}")
    opened: list[object] = []
    event.listen(database.engine.sync_engine, "connect", lambda connection, record: opened.append(connection))

    async def read(holding: list[None], everyone: anyio.Event) -> None:
        async with database.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            holding.append(None)
            if len(holding) == 12:
                everyone.set()
            await everyone.wait()  # each holds its connection until all twelve do

    counts = []
    for _ in range(2):
        holding: list[None] = []
        everyone = anyio.Event()
        async with anyio.create_task_group() as burst:
            for _ in range(12):
                burst.start_soon(read, holding, everyone)
        counts.append(len(opened))
    assert counts == [12, 12]
    await database.dispose()


async def test_a_key_read_on_sqlite_sees_each_commit_at_once(tmp_path: Path) -> None:
    """``fetch`` reads on the calling thread through a connection of its own: it must still see
    every commit made through the engine the moment it is made (no transaction held open)."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'fetch.sqlite'}")
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    for value in ("one", "two"):
        async with database.engine.begin() as conn:
            await conn.execute(text("INSERT OR REPLACE INTO t VALUES (1, :v)"), {"v": value})
        assert await database.fetch("SELECT v FROM t WHERE id = ?", (1,)) == [(value,)]
    await database.dispose()


async def test_a_key_read_waits_off_the_event_loop_when_sqlite_is_busy(tmp_path: Path) -> None:
    """A connection holding the file in exclusive locking mode shuts every reader out: ``fetch``
    does not wait for it on the event loop (its own connection gives up at once) but through the
    pool, and answers once the lock is gone."""
    path = tmp_path / "busy.sqlite"
    database = Database(f"sqlite+aiosqlite:///{path}")
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        await conn.execute(text("INSERT INTO t VALUES (1, 'kept')"))
    await database.engine.dispose()  # no pooled connection keeps the WAL index shared
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("UPDATE t SET v = 'kept' WHERE id = 1")  # takes the exclusive lock, held until closed
    reading = asyncio.create_task(database.fetch("SELECT v FROM t WHERE id = ?", (1,)))
    done, _ = await asyncio.wait({reading}, timeout=0.5)
    assert not done, "the read answered while the file was locked"
    holder.close()
    assert await reading == [("kept",)]
    await database.dispose()
