"""The statements both back ends write differently: an insert that updates, adds to, or keeps a
row that is there already (``ON CONFLICT``, the same words in SQLite and PostgreSQL, built by
each dialect's own ``insert``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def _insert(connection: sa.Connection, table: sa.Table, row: Mapping[str, Any]) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).values(**row)


def upsert(
    connection: sa.Connection, table: sa.Table, row: Mapping[str, Any], keys: Sequence[str]
) -> sa.Executable:
    """Insert ``row``, or update the row with its ``keys`` to the rest of it."""
    statement = _insert(connection, table, row)
    changed = {name: statement.excluded[name] for name in row if name not in keys}
    result: sa.Executable = statement.on_conflict_do_update(index_elements=list(keys), set_=changed)
    return result


def upsert_many(
    connection: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> None:
    """:func:`upsert` for many rows of the same columns: one statement, executed for all of them
    (built once, not per row: building one costs about as much as the database's work)."""
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    changed = {name: statement.excluded[name] for name in rows[0] if name not in keys}
    connection.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changed), list(rows))


def insert_missing(
    connection: sa.Connection, table: sa.Table, row: Mapping[str, Any], keys: Sequence[str]
) -> sa.Executable:
    """Insert ``row`` unless a row with its ``keys`` is there."""
    result: sa.Executable = _insert(connection, table, row).on_conflict_do_nothing(index_elements=list(keys))
    return result


def add_to(
    connection: sa.Connection,
    table: sa.Table,
    key: Mapping[str, Any],
    amounts: Mapping[str, float],
) -> sa.Executable:
    """Add ``amounts`` to the columns of the row with ``key`` (made with them on first use), in
    the database, so concurrent writers never lose a count."""
    statement = _insert(connection, table, {**key, **amounts})
    added = {name: table.c[name] + statement.excluded[name] for name in amounts}
    result: sa.Executable = statement.on_conflict_do_update(index_elements=list(key), set_=added)
    return result
