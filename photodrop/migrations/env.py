"""Alembic environment: runs on the connection photodrop hands it, or on PHOTODROP settings."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from sqlalchemy import TypeDecorator
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import photodrop.models  # noqa: F401  (registers the tables on SQLModel.metadata)

target_metadata = SQLModel.metadata


def _render_item(kind: str, item: Any, autogen_context: Any) -> str | Literal[False]:
    # Our column types only adapt values in Python; migrations store their plain SQL types.
    if kind == "type" and isinstance(item, TypeDecorator):
        autogen_context.imports.add("import sqlalchemy as sa")
        return f"sa.{item.impl!r}"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_item=_render_item,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    from photodrop.config import Settings
    from photodrop.db import Database

    settings = Settings()
    context.config.attributes["settings"] = settings  # revisions that re-seal secrets need its key
    database = Database.from_settings(settings)
    async with database.engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await database.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_standalone())
