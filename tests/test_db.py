"""The database's engine: the driver a URL names, and PostgreSQL pools sized from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
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
