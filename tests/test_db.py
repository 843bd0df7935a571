"""The database's engine: the driver a URL names, and PostgreSQL pools sized from the settings."""

from __future__ import annotations

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
