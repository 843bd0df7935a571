"""Migrations build exactly the schema the models describe, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from photodrop import crypto
from photodrop.config import Settings
from photodrop.db import Database, alembic_config
from tests.conftest import ON_POSTGRES, blank_database_url
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


def _migrate(connection: Connection, revision: str, settings: Settings | None, *, down: bool = False) -> None:
    (command.downgrade if down else command.upgrade)(alembic_config(connection, settings), revision)


def _rows(connection: Connection, query: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in connection.execute(text(query)).all()]


async def test_the_upgrade_seals_stored_webhook_secrets_and_the_downgrade_opens_them(tmp_path: Path) -> None:
    url = blank_database_url(tmp_path)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    current, previous = "whsec_" + "Q" * 43 + "=", "whsec_" + "P" * 43 + "="
    # Enough rows that the rewritten tables leave freed space behind them in the file.
    hook_secrets = [f"{n:04d}" + "ab" * 30 for n in range(300)]
    now = datetime.now(UTC).replace(tzinfo=None)
    database = Database(url)
    async with database.engine.begin() as connection:
        await connection.run_sync(_migrate, "0007", None)
        await connection.execute(
            text(
                "INSERT INTO project (id, name, webhook_secret, previous_webhook_secret, created_at) "
                "VALUES ('proj_1', 'default', :current, :previous, :now)"
            ),
            {"current": current, "previous": previous, "now": now},
        )
        await connection.execute(
            text(
                "INSERT INTO event_webhook (id, project_id, url, topics, secret, signature_method, is_active, "
                "max_retries, retry_intervals, disable_after_failures, consecutive_failures, custom_headers, "
                "created_at, updated_at) VALUES (:id, 'proj_1', 'https://hooks.example.com/', '[\"*\"]', "
                ":secret, 'hmac_sha256', true, 5, '[60]', 20, 0, '{}', :now, :now)"
            ),
            [{"id": f"wh_{secret[:4]}", "secret": secret, "now": now} for secret in hook_secrets],
        )
    with pytest.raises(RuntimeError, match="PHOTODROP_SECRET_KEY"):
        await database.migrate()  # rows to seal, and no key to seal them with: nothing changes
    await database.migrate(settings)
    async with database.engine.connect() as connection:
        sealed = await connection.run_sync(
            _rows, "SELECT webhook_secret_encrypted, previous_webhook_secret_encrypted FROM project"
        )
        hooks_sealed = await connection.run_sync(_rows, "SELECT secret_encrypted FROM event_webhook ORDER BY id")
    assert [crypto.unseal_text(settings, str(token)) for token in sealed[0]] == [current, previous]
    assert [crypto.unseal_text(settings, str(token)) for (token,) in hooks_sealed] == hook_secrets
    await database.dispose()
    if not ON_POSTGRES:  # the plaintext the old columns held is not left in the file either
        raw = Path(url.split("///", 1)[1]).read_bytes()  # noqa: ASYNC240
        assert not any(secret.encode() in raw for secret in (current, previous, *hook_secrets))
    async with database.engine.begin() as connection:
        await connection.run_sync(_migrate, "0007", settings, down=True)
        plain = await connection.run_sync(_rows, "SELECT webhook_secret, previous_webhook_secret FROM project")
        hooks_plain = await connection.run_sync(_rows, "SELECT secret FROM event_webhook ORDER BY id")
    await database.dispose()
    assert plain == [(current, previous)] and hooks_plain == [(secret,) for secret in hook_secrets]


async def test_the_upgrade_seals_event_webhook_headers_and_the_downgrade_opens_them(tmp_path: Path) -> None:
    url = blank_database_url(tmp_path)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    headers = [{"Authorization": f"Bearer hdr-{n:04d}" + "cd" * 20, "X-Team": "claims"} for n in range(200)]
    now = datetime.now(UTC).replace(tzinfo=None)
    database = Database(url)
    async with database.engine.begin() as connection:
        await connection.run_sync(_migrate, "0010", settings)
        await connection.execute(
            text(
                "INSERT INTO project (id, name, webhook_secret_encrypted, created_at) VALUES ('proj_1', 'p', '', :now)"
            ),
            {"now": now},
        )
        await connection.execute(
            text(
                "INSERT INTO event_webhook (id, project_id, url, topics, secret_encrypted, signature_method, "
                "is_active, max_retries, retry_intervals, disable_after_failures, consecutive_failures, "
                "custom_headers, created_at, updated_at) VALUES (:id, 'proj_1', 'https://hooks.example.com/', "
                "'[\"*\"]', '', 'hmac_sha256', true, 5, '[60]', 20, 0, :headers, :now, :now)"
            ),
            [{"id": f"wh_{n:04d}", "headers": json.dumps(h), "now": now} for n, h in enumerate(headers)],
        )
    await database.migrate(settings)
    async with database.engine.connect() as connection:
        sealed = await connection.run_sync(_rows, "SELECT custom_headers_encrypted FROM event_webhook ORDER BY id")
    await database.dispose()
    assert [crypto.unseal(settings, str(token)) for (token,) in sealed] == headers
    if not ON_POSTGRES:
        raw = Path(url.split("///", 1)[1]).read_bytes()  # noqa: ASYNC240
        assert b"Bearer hdr-" not in raw
    async with database.engine.begin() as connection:
        await connection.run_sync(_migrate, "0010", settings, down=True)
        plain = await connection.run_sync(_rows, "SELECT custom_headers FROM event_webhook ORDER BY id")
    await database.dispose()
    assert [value if isinstance(value, dict) else json.loads(value) for (value,) in plain] == headers
