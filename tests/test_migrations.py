"""Migrations build exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from photodrop.db import Database
from tests.live import photodrop_cli

pytestmark = pytest.mark.anyio


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}")
    await database.migrate()
    async with database.engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    await database.dispose()
    assert differences == []


def test_migrate_command_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        result = photodrop_cli(tmp_path / "data", "migrate")
        assert result.returncode == 0 and "newest schema" in result.stdout
