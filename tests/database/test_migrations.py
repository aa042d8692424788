"""Migrations: a new database gets every table, an earlier SQLite database is brought up to the
baseline without losing rows, and gateways opening one database together both succeed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from core.errors import InvalidInput
from gateway.database.engine import Database, SQLiteDatabase, postgres_url
from gateway.database.schema import audit_log, metadata
from gateway.db import open_database
from tests.conftest import close_any, open_any

HEAD = "0002"


def tables_and_revision(connection: sa.Connection) -> tuple[set[str], str]:
    names = set(sa.inspect(connection).get_table_names())
    revision = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    return names, revision


async def test_a_new_database_gets_every_table_and_opening_it_again_changes_nothing(
    database_url: str,
) -> None:
    database = await open_any(database_url)
    try:
        names, revision = await database.read(tables_and_revision)
        assert set(metadata.tables) <= names
        assert revision == HEAD
    finally:
        await close_any(database)
    again = await open_any(database_url)
    try:
        assert await again.read(tables_and_revision) == (names, revision)
    finally:
        await close_any(again)


async def test_the_migrated_schema_is_the_one_the_code_declares(database: Database) -> None:
    """A change to schema.py without its migration (or the reverse) fails here, on both back ends."""

    def differences(connection: sa.Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return [diff for diff in compare_metadata(context, metadata) if diff[0] != "remove_table"]

    assert await database.read(differences) == []


async def test_the_audit_log_refuses_updates_and_deletes(database: Database) -> None:
    await database.run(lambda c: c.execute(sa.insert(audit_log).values(at=1.0, actor="key:a", action="push")))
    for change in (sa.update(audit_log).values(actor="key:b"), sa.delete(audit_log)):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            await database.run(lambda c, change=change: c.execute(change))
    actors = await database.read(lambda c: c.execute(sa.select(audit_log.c.actor)).scalars().all())
    assert actors == ["key:a"]


async def test_gateways_that_open_a_database_together_all_succeed(database_url: str) -> None:
    opened = await asyncio.gather(*(open_any(database_url) for _ in range(3)))
    try:
        for database in opened:
            assert (await database.read(tables_and_revision))[1] == HEAD
    finally:
        for database in opened:
            await close_any(database)


LEGACY = """
CREATE TABLE api_keys (id TEXT PRIMARY KEY, secret_sha256 BLOB NOT NULL, name TEXT NOT NULL,
    scopes TEXT NOT NULL, models TEXT, rate_limit TEXT, created_at REAL NOT NULL, expires_at REAL,
    revoked_at REAL) STRICT;
CREATE TABLE deployments (model TEXT PRIMARY KEY, spec TEXT NOT NULL, guard TEXT NOT NULL,
    stable TEXT NOT NULL, generation INTEGER NOT NULL, updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL) STRICT;
INSERT INTO api_keys VALUES ('k1', x'00', 'old key', '["predict"]', NULL, NULL, 1.0, NULL, NULL);
INSERT INTO deployments VALUES ('digits', '{}', '{}', '1', 3, 2.0, 'key:k1');
"""


async def test_a_database_from_before_migrations_keeps_its_rows_and_gains_the_new_columns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.sqlite"
    with sqlite3.connect(path) as legacy:
        legacy.executescript(LEGACY)
    database = SQLiteDatabase.open(open_database(path))
    try:

        def read(connection: sa.Connection) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
            keys = connection.execute(sa.text("SELECT id, name, expiry_audited FROM api_keys")).all()
            rows = connection.execute(
                sa.text("SELECT model, generation, history, started_at FROM deployments")
            )
            return [tuple(row) for row in keys], [tuple(row) for row in rows]

        assert await database.read(read) == ([("k1", "old key", 0)], [("digits", 3, "[]", 0.0)])
        assert (await database.read(tables_and_revision))[1] == HEAD
    finally:
        await close_any(database)


def test_only_postgresql_urls_name_another_database() -> None:
    assert postgres_url("postgresql://u:p@db:5432/m") == "postgresql+asyncpg://u:p@db:5432/m"
    with pytest.raises(InvalidInput, match="PostgreSQL"):
        postgres_url("mysql://u@db/m")
