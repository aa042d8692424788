"""Opening the gateway's database, migrated to the newest schema, on one of two back ends.

* **SQLite** (the embedded default, one host): the data folder's file, through the one
  ``sqlite3`` connection the gateway opens (``gateway.db.open_database``: WAL, busy timeout,
  foreign keys). Its statements are short and indexed and run on the event loop, each
  transaction BEGIN IMMEDIATE (the write lock first, so concurrent writers queue, not fail).
  An async driver would not help: a transaction spread over several awaits would hold the
  file's write lock while the loop runs other work that needs it.
* **PostgreSQL** (several hosts, ``postgresql://``): an async SQLAlchemy engine on asyncpg.

Stores write each transaction once, as a synchronous function of a SQLAlchemy ``Connection``
in SQLAlchemy Core, and hand it to :meth:`Database.run` (or :meth:`Database.read`): SQLite runs
it at once, PostgreSQL through ``run_sync`` on the async connection. Migrations (Alembic) run when
a gateway opens the database, in one transaction that also serializes gateways starting
together (SQLite's write lock; an advisory lock on PostgreSQL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from core.errors import InvalidInput

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x6D6465706C6F79  # "mdeploy": one advisory lock id for every gateway's migrations

CONNECT_TIMEOUT_S = 5.0
T = TypeVar("T")
Backend = Literal["sqlite", "postgresql"]
READ_ONLY = "mdeploy_read_only"
"""Execution option of :meth:`Database.read`'s connections: SQLite begins them DEFERRED."""


class Database(Protocol):
    backend: Backend

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(connection, *args)`` in one write transaction, committed when it returns."""
        ...

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        """``work(connection, *args)`` in a read-only transaction."""
        ...

    async def close(self) -> None: ...


def postgres_url(given: str) -> str:
    """``postgresql://user:password@host:port/name`` as SQLAlchemy names it with asyncpg;
    InvalidInput for anything else."""
    try:
        url = make_url(given)
    except Exception:
        raise InvalidInput(
            "the database URL must look like postgresql://user:password@host:5432/name"
        ) from None
    if url.get_backend_name() != "postgresql":
        raise InvalidInput(f"the database must be PostgreSQL (postgresql://...), not {url.drivername}")
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


class SQLiteDatabase:
    """The gateway's SQLite file, through its one ``sqlite3`` connection (see the module doc)."""

    backend: Backend = "sqlite"

    def __init__(self, connection: sqlite3.Connection, *, owned: bool = False) -> None:
        self.connection = connection
        """The raw connection, for what only SQLite has (``PRAGMA data_version``)."""
        self._owned = owned
        self._engine = _sqlite_engine(connection)

    @classmethod
    def open(cls, connection: sqlite3.Connection, *, owned: bool = False) -> SQLiteDatabase:
        """Migrated; ``owned``: :meth:`close` closes ``connection`` too."""
        database = cls(connection, owned=owned)
        with database._engine.connect() as sync, sync.begin():
            _migrate(sync)
        return database

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        with self._engine.connect() as connection, connection.begin():
            return work(connection, *args)

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        connection = self._engine.connect().execution_options(**{READ_ONLY: True})
        with connection, connection.begin():
            return work(connection, *args)

    async def close(self) -> None:
        self._engine.dispose()
        if self._owned:
            self.connection.close()


class PostgresDatabase:
    backend: Backend = "postgresql"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        engine = create_async_engine(
            postgres_url(url),
            pool_size=5,
            max_overflow=10,
            pool_pre_ping=True,  # a connection from before a PostgreSQL restart is replaced, not used
            # A host that does not answer fails a connection in seconds, not asyncpg's 60.
            connect_args={"timeout": CONNECT_TIMEOUT_S},
        )
        try:
            async with engine.begin() as connection:
                await connection.run_sync(_migrate)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(work, *args)

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        async with self._engine.connect() as connection:
            await connection.execution_options(postgresql_readonly=True)
            async with connection.begin():
                return await connection.run_sync(work, *args)

    async def close(self) -> None:
        await self._engine.dispose()


def _sqlite_engine(connection: sqlite3.Connection) -> Engine:
    # The driver is in autocommit (isolation_level=None, as open_database makes it): "begin"
    # decides each transaction's kind.
    engine = create_engine("sqlite://", creator=lambda: connection, poolclass=StaticPool)

    @event.listens_for(engine, "begin")
    def _begin(sync: Connection) -> None:
        sync.exec_driver_sql("BEGIN" if sync.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def _migrate(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK})
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def open_gateway_database(url: str | None, sqlite: Callable[[], sqlite3.Connection]) -> Database:
    """PostgreSQL at ``url`` when given (``settings.database_url``), else the SQLite file that
    ``sqlite()`` opens; migrated either way."""
    if url is not None:
        return await PostgresDatabase.open(url)
    return SQLiteDatabase.open(sqlite(), owned=True)
