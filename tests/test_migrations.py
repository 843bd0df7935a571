"""Migrations build exactly the schema the models describe, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from photodrop.db import Database
from tests.conftest import blank_database_url
from tests.live import photodrop_cli

pytestmark = pytest.mark.anyio


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    database = Database(blank_database_url(tmp_path))
    await database.migrate()
    async with database.engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    await database.dispose()
    assert differences == []


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_migrate_command_is_idempotent(tmp_path: Path) -> None:
    url = blank_database_url(tmp_path)
    for _ in range(2):
        result = photodrop_cli(tmp_path / "data", "migrate", PHOTODROP_DATABASE_URL=url)
        assert result.returncode == 0 and "newest schema" in result.stdout, result.stderr
    database = Database(url)
    async with database.engine.connect() as connection:
        tables = await connection.run_sync(_tables)
    await database.dispose()
    assert {"alembic_version", "upload_session", "delivery", "event"} <= tables
