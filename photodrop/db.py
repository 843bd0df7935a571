"""The async engine, its sessions, and schema migrations."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Table, create_engine, event
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.base import manager_of_class
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.selectable import ExecutableReturnsRows
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from photodrop.config import Settings
from photodrop.writer import AUTOCHECKPOINT_PAGES, Checkpointer, GroupWriter, Unit

T = TypeVar("T")

_WRITE = "photodrop_write"
_MIGRATION_LOCK = 0x70686F746F  # any constant of our own: "photo" in ASCII


class Database:
    """One engine and two kinds of session: plain ones for reads, transactions for writes.

    On SQLite a write transaction starts with ``BEGIN IMMEDIATE`` so that concurrent writers
    queue on the busy timeout instead of failing when a read lock cannot be upgraded.
    """

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 20, pool_timeout: float = 30) -> None:
        url = _with_async_driver(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        options: dict[str, Any] = {}
        on_disk = False
        if self.is_sqlite:
            path = url.split("///", 1)[-1] if "///" in url else ""
            on_disk = bool(path) and path != ":memory:"
            if on_disk:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            options["connect_args"] = {"timeout": 30}
            if on_disk:
                # Room for every concurrent reader: past SQLAlchemy's 5, each burst would open and
                # close connections (an aiosqlite thread, the PRAGMAs and functions each time).
                options.update(pool_size=20, max_overflow=20)
        else:
            options.update(
                pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout, pool_pre_ping=True
            )
        self.engine = create_async_engine(url, **options)
        # With the checkpointer copying the WAL back, SQLite's own checkpoint in a COMMIT is only a backstop.
        autocheckpoint = AUTOCHECKPOINT_PAGES if on_disk else None
        if self.is_sqlite:
            _configure_sqlite(self.engine.sync_engine, autocheckpoint=autocheckpoint)
        self._reads = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self._write_queue: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self.is_sqlite else contextlib.nullcontext()
        )
        self._writes = async_sessionmaker(
            self.engine.execution_options(**{_WRITE: True}), class_=AsyncSession, expire_on_commit=False
        )
        self._writer: GroupWriter | None = None
        self._checkpointer: Checkpointer | None = None
        self._path = path if on_disk else None
        self._own_readers: dict[int, sqlite3.Connection] = {}  # by thread: see ``fetch``
        self._own_readers_lock = threading.Lock()
        if on_disk:
            # The group writer's own connection (the same file, pragmas and BEGIN IMMEDIATE), and the checkpointer's.
            sync_engine = create_engine(url.replace("+aiosqlite", ""), connect_args={"timeout": 30})
            _configure_sqlite(sync_engine, autocheckpoint=autocheckpoint)
            self._writer = GroupWriter(sync_engine.execution_options(**{_WRITE: True}))
            self._checkpointer = Checkpointer(sync_engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """The deployment's database, its pool sized as the settings say."""
        return cls(
            settings.resolved_database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout,
        )

    def read(self) -> AsyncSession:
        return self._reads()

    async def fetch(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """The rows of a small read on SQLite (a row by its key), ``sql`` in the driver's own dialect.

        On a database file, run on the calling thread through a connection of its own: a key
        lookup takes tens of microseconds there, less than the trip to a driver thread and back
        that the pool's connections make, and a reader in WAL mode waits for no writer. Should
        SQLite still find the file busy (a WAL being recovered), the read goes through the pool.
        """
        assert self.is_sqlite, "fetch reads SQLite only"
        if self._path is not None:
            try:
                return self._own_reader().execute(sql, parameters).fetchall()
            except sqlite3.OperationalError:
                pass  # busy: no waiting on the event loop
        async with self.engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection  # aiosqlite's
            return list(await driver.execute_fetchall(sql, parameters))

    def _own_reader(self) -> sqlite3.Connection:
        thread = threading.get_ident()
        reader = self._own_readers.get(thread)
        if reader is None:
            assert self._path is not None
            # Autocommit: every statement reads the newest commit. No busy wait: see ``fetch``.
            reader = sqlite3.connect(self._path, isolation_level=None, timeout=0, check_same_thread=False)
            with self._own_readers_lock:
                self._own_readers[thread] = reader
        return reader

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed when the block ends, rolled back if it raises.

        On SQLite, writers of this process queue on a lock first: SQLite's own busy handler
        retries with growing sleeps, which leaves the database idle between holders and makes
        waits uneven, while a queue hands the lock straight to the next writer.
        """
        self._start_checkpoints()
        async with self._write_queue, self._writes() as session, session.begin():
            yield session

    async def run(self, unit: Unit[T]) -> T:
        """Run ``unit`` (Core statements on a ``Connection``) as one transaction of its own, or as one
        savepoint of the group writer's next transaction on SQLite; its result once committed.

        Nothing is held on the event loop while it waits: the unit queues behind no asyncio lock.
        """
        if self._writer is not None:
            self._start_checkpoints()
            return await self._writer.run(unit)
        async with self.engine.begin() as conn:
            return await conn.run_sync(unit)

    async def migrate(self, settings: Settings | None = None) -> None:
        """Bring the schema to the newest revision.

        ``settings`` open and seal stored secrets for the revisions that re-seal them; a database
        with no such rows migrates without. On PostgreSQL an advisory lock makes processes that
        start together migrate one after another: the later ones then find the schema current
        instead of racing to create it.
        """
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            sealed = await conn.run_sync(_upgrade, settings)
        if sealed and self.is_sqlite:
            # Rows written before the upgrade, while secure_delete was off, can leave copies of the
            # plaintext in pages' free space; only a rebuild of the file removes them.
            async with self.engine.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                assert driver is not None
                await driver.execute("VACUUM")

    def _start_checkpoints(self) -> None:
        # On the first write, not at start: a process that only reads (or never touches the file) needs none.
        if self._checkpointer is not None:
            self._checkpointer.start()

    async def dispose(self) -> None:
        with self._own_readers_lock:
            readers, self._own_readers = list(self._own_readers.values()), {}
        for reader in readers:
            reader.close()
        if self._checkpointer is not None:
            await self._checkpointer.close()
        if self._writer is not None:
            await self._writer.close()
        await self.engine.dispose()


M = TypeVar("M", bound=SQLModel)


def new_row(model: type[M], **values: Any) -> M:
    """A new, not yet stored ``model`` (a table model) holding ``values``, the rest at their defaults.

    Made the way SQLAlchemy makes a row it loads (the instance state, then the values straight into
    the instance's dict), not through the model's ``__init__``, which sends every attribute through
    SQLModel's and SQLAlchemy's instrumentation one by one: several times the cost of the insert that
    follows. Neither validates, so the result is the same instance for what reads it, and a session
    it is added to inserts it like any other (the ORM's insert reads the values from that dict).
    """
    fields = model.model_fields
    unknown = values.keys() - fields.keys()
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    state: dict[str, Any] = {}
    for name, info in fields.items():
        if name in values:
            state[name] = values[name]
        elif info.is_required():
            raise TypeError(f"{model.__name__} needs {name}")
        else:
            state[name] = info.get_default(call_default_factory=True)
    manager = manager_of_class(model)
    if not manager.mapper.configured:
        configure_mappers()  # what a model's first __init__ would do: attribute access needs it
    instance: M = manager.new_instance()  # SQLModel's __new__ readies pydantic's own slots
    instance.__dict__.update(state)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    return instance


def assign(row: SQLModel, values: Mapping[str, Any]) -> None:
    """Set ``values`` on a table model that no session holds (a worker's copy of a row it leased),
    the way ``new_row`` fills one: straight into the instance's dict. Nothing tracks the change, so
    this is for a copy that only reads as the row does after a statement wrote ``values``, never
    for one that a session is to flush."""
    row.__dict__.update(values)


def inserting(*rows: SQLModel) -> Unit[None]:
    """A unit that inserts ``rows`` (table models, in the order given: parents first) as they are.

    On SQLite each row goes straight to the driver as one prepared statement (sqlite3 keeps it
    compiled), its values converted by the columns' own types: SQLAlchemy's execution path costs
    several times the insert itself there. Elsewhere it runs as a Core insert.
    """

    def insert(conn: Connection) -> None:
        if conn.dialect.name != "sqlite":
            for row in rows:
                table = _prepared(type(row), conn.dialect).table
                conn.execute(table.insert(), {column.key: getattr(row, column.key) for column in table.columns})
            return
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            for row in rows:
                prepared = _prepared(type(row), conn.dialect)
                cursor.execute(prepared.sql, prepared.values(row))
        finally:
            cursor.close()

    return insert


def prepare_inserts(dialect: Dialect, *models: type[SQLModel]) -> None:
    """Compile, ahead of their first use, the inserts ``inserting`` runs for rows of ``models``."""
    for model in models:
        _prepared(model, dialect)


@dataclass(frozen=True)
class _PreparedInsert:
    table: Table
    sql: str
    columns: Sequence[tuple[str, Callable[[Any], Any] | None]]  # attribute, and how its type stores it

    def values(self, row: SQLModel) -> list[Any]:
        return [getattr(row, key) if store is None else store(getattr(row, key)) for key, store in self.columns]


@functools.cache
def _prepared(model: type[SQLModel], dialect: Dialect) -> _PreparedInsert:
    table: Table = model.__table__  # type: ignore[attr-defined]
    compiled = table.insert().compile(dialect=dialect, column_keys=[column.key for column in table.columns])
    assert compiled.positiontup is not None  # SQLite's paramstyle is positional
    types = {column.key: column.type for column in table.columns}
    columns = [(key, types[key].dialect_impl(dialect).bind_processor(dialect)) for key in compiled.positiontup]
    return _PreparedInsert(table, compiled.string, columns)


@dataclass(frozen=True)
class Prepared:
    """A Core statement that returns rows (a select, or DML with RETURNING), compiled once for one
    dialect (``prepare``), for the statements run on every upload, claim or outcome.

    On SQLite ``rows`` sends it straight to the driver as a prepared statement (sqlite3 keeps it
    compiled), its parameters stored and its rows loaded by the columns' own types: SQLAlchemy's
    execution path costs several times the statement there. Elsewhere it runs as the Core statement
    it is, with the same parameters, and SQLAlchemy converts the rows. ``args`` and ``load`` are the
    two halves of ``rows`` for a caller holding the driver's connection itself (``Database.fetch``).
    """

    statement: ExecutableReturnsRows
    sql: str
    # each positional parameter: its name, or (for a constant in the statement) None and its stored value
    params: Sequence[tuple[str | None, Any, Callable[[Any], Any] | None]]
    keys: Sequence[str]  # each result column's key
    loads: Sequence[Callable[[Any], Any] | None]  # how each result column's type loads a value

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The driver's positional parameters for the named ``values``."""
        return [
            value if name is None else values[name] if store is None else store(values[name])
            for name, value, store in self.params
        ]

    def load(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """A row as the driver gave it, its values loaded by the columns' types."""
        return tuple(value if load is None else load(value) for load, value in zip(self.loads, row, strict=True))

    def mapping(self, row: Sequence[Any]) -> dict[str, Any]:
        """A loaded row (from ``rows`` or ``load``) by column key."""
        return dict(zip(self.keys, row, strict=True))

    def rows(self, conn: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The statement's rows for the named parameters in ``values``, inside the unit's transaction."""
        if conn.dialect.name != "sqlite":
            return [tuple(row) for row in conn.execute(self.statement, dict(values))]
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            found = cursor.execute(self.sql, self.args(values)).fetchall()
        finally:
            cursor.close()
        return [self.load(row) for row in found]


def prepare(statement: ExecutableReturnsRows, dialect: Dialect) -> Prepared:
    """``statement`` (a select, or an insert/update/delete with RETURNING, its parameters named with
    ``bindparam``, none expanding) readied for ``Prepared.rows`` on ``dialect``; keep the result
    (``functools.cache``)."""
    compiled = statement.compile(dialect=dialect)
    names = compiled.positiontup or []
    params: list[tuple[str | None, Any, Callable[[Any], Any] | None]] = []
    for name in names:
        bind = compiled.binds[name]
        assert not bind.expanding, "an expanding parameter changes the SQL with each value"
        store = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if bind.required:  # named with ``bindparam`` and no value: each run gives it
            params.append((name, None, store))
        else:
            value = bind.effective_value
            params.append((None, value if store is None else store(value), None))
    columns = statement.exported_columns
    loads = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
    return Prepared(statement, compiled.string, params, [column.key for column in columns], loads)


def _with_async_driver(url: str) -> str:
    """A plain ``postgres://`` or ``postgresql://`` URL (as the broadcast takes) names asyncpg for SQLAlchemy."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+asyncpg{sep}{rest}" if scheme in ("postgres", "postgresql") else url


SEALED_ROWS = "sealed_rows"  # set in Alembic's attributes by a revision that sealed stored plaintext


def alembic_config(connection: Connection | None = None, settings: Settings | None = None) -> Config:
    """Alembic's configuration; revisions that re-seal stored secrets read ``settings`` from it."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    config.attributes["settings"] = settings
    return config


def _upgrade(connection: Connection, settings: Settings | None) -> bool:
    """Upgrade to the newest revision; whether a revision sealed stored plaintext on the way."""
    config = alembic_config(connection, settings)
    command.upgrade(config, "head")
    return bool(config.attributes.get(SEALED_ROWS))


def _configure_sqlite(engine: Any, *, autocheckpoint: int | None = None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" hook below decide how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if autocheckpoint is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint:d}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")
