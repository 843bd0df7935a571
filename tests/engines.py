"""The scale-out parts the second test leg runs on: PostgreSQL databases, and moto's S3 server.

tests/conftest.py decides which leg runs; this module only knows how to provide the parts.
Each test gets a PostgreSQL database of its own, as it gets a SQLite file of its own on the
first leg. Creating and dropping a database costs about a second on PostgreSQL, so a few are
cloned from one migrated template and reused: a database a test gave back is emptied in the
background (TRUNCATE) while the next test runs on another one.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
from moto.server import ThreadedMotoServer

from photodrop.db import Database
from tests.live import free_port

T = TypeVar("T")


class _LoopThread:
    """An event loop on a thread of its own, so plain functions such as make_settings can wait on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def asyncpg_url(url: str, database: str) -> str:
    """``url`` pointing at ``database``, with the driver SQLAlchemy needs named in its scheme."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{database}", parts.query, ""))


def _plain_url(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, f"/{database}", parts.query, ""))


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain database name: {name!r}")
    return f'"{name}"'


class PostgresDatabases:
    """Migrated databases named ``<prefix>_<n>``, cloned from ``<prefix>_template``."""

    def __init__(self, admin_url: str, prefix: str) -> None:
        self.admin_url = admin_url
        self.prefix = prefix
        self.template = f"{prefix}_template"
        self._thread = _LoopThread("photodrop-test-postgres")
        self._count = 0
        self._clean: list[str] = []
        self._made: list[str] = []
        self._cleaning: set[asyncio.Task[None]] = set()
        self._tables: list[str] = []
        self._admin_turn: asyncio.Lock | None = None  # asyncpg runs one command at a time per connection
        self._thread.run(self._start())

    async def _admin_execute(self, query: str, *args: Any) -> None:
        assert self._admin_turn is not None
        async with self._admin_turn:
            await self._admin.execute(query, *args)

    async def _start(self) -> None:
        self._admin_turn = asyncio.Lock()
        self._admin = await asyncpg.connect(_plain_url(self.admin_url, urlsplit(self.admin_url).path.lstrip("/")))
        await self._admin_execute(f"DROP DATABASE IF EXISTS {_ident(self.template)} WITH (FORCE)")
        await self._admin_execute(f"CREATE DATABASE {_ident(self.template)}")
        database = Database(asyncpg_url(self.admin_url, self.template))
        await database.migrate()
        await database.dispose()
        template = await asyncpg.connect(_plain_url(self.admin_url, self.template))
        rows = await template.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        await template.close()
        self._tables = sorted(row["tablename"] for row in rows)

    def take(self) -> str:
        """The SQLAlchemy URL of an empty, migrated database no one else is using."""
        return asyncpg_url(self.admin_url, self._thread.run(self._take()))

    async def _take(self) -> str:
        if self._clean:
            return self._clean.pop()
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        await self._admin_execute(f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(self.template)}")
        self._made.append(name)
        return name

    def blank(self) -> str:
        """The SQLAlchemy URL of a new database with no schema at all, dropped when the session ends."""
        return asyncpg_url(self.admin_url, self._thread.run(self._blank()))

    async def _blank(self) -> str:
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        await self._admin_execute(f"CREATE DATABASE {_ident(name)}")
        self._made.append(name)
        return name

    def give_back(self, url: str) -> None:
        """Empty the database in the background and offer it to a later test."""
        name = urlsplit(url).path.lstrip("/")

        def schedule() -> None:
            task = self._thread.loop.create_task(self._truncate(name))
            self._cleaning.add(task)
            task.add_done_callback(self._cleaning.discard)

        self._thread.loop.call_soon_threadsafe(schedule)

    async def _truncate(self, name: str) -> None:
        # Connections a test left open would hold locks TRUNCATE waits for.
        await self._admin_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        connection = await asyncpg.connect(_plain_url(self.admin_url, name))
        try:
            await connection.execute(f"TRUNCATE {', '.join(map(_ident, self._tables))} RESTART IDENTITY CASCADE")
        finally:
            await connection.close()
        self._clean.append(name)

    def close(self) -> None:
        self._thread.run(self._close())
        self._thread.stop()

    async def _close(self) -> None:
        if self._cleaning:
            await asyncio.gather(*self._cleaning, return_exceptions=True)
        for name in [*self._made, self.template]:
            await self._admin_execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
        await self._admin.close()


class MotoS3:
    """moto's standalone S3 server (a real HTTP S3 API) on 127.0.0.1 at a free port."""

    CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    REGION = "us-east-1"

    def __init__(self) -> None:
        port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.staging_bucket = f"photodrop-staging-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=self.staging_bucket)

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=self.REGION, **self.CREDENTIALS
        )

    def staging_settings(self) -> dict[str, Any]:
        """Settings that stage a test's images under a prefix of its own in the shared bucket."""
        return {
            "storage_url": f"s3://{self.staging_bucket}/{secrets.token_hex(6)}",
            "storage_s3_endpoint_url": self.endpoint,
            "storage_s3_region": self.REGION,
            "storage_s3_access_key_id": self.CREDENTIALS["aws_access_key_id"],
            "storage_s3_secret_access_key": self.CREDENTIALS["aws_secret_access_key"],
        }

    def stop(self) -> None:
        self._server.stop()
