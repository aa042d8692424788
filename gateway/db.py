"""The gateway's SQLite file: one in the data folder, WAL mode, shared by the gateway's parts.

Its tables are made and changed by the migrations of ``gateway.database`` (which wraps this
connection as the SQLite :class:`~gateway.database.engine.Database`). The registry still queries
the connection directly and still passes its tables to :func:`ensure_schema` (so its unit tests
can open a bare file); those statements go when it moves to SQLAlchemy Core. Queries are short
and indexed, so they run on the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating) the database in WAL mode; several gateway processes may share it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


def ensure_schema(connection: sqlite3.Connection, schema: str) -> None:
    """Create the tables and indexes of ``schema`` (``CREATE ... IF NOT EXISTS`` statements)."""
    connection.executescript(schema)


def ensure_columns(connection: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """Add the ``columns`` (name: type and default) that an older ``table`` lacks."""
    present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
    for name, definition in columns.items():
        if name in present:
            continue
        try:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
        except sqlite3.OperationalError as error:
            if "duplicate column" not in str(error):  # another process added it first
                raise


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: take the write lock first, so concurrent writers queue, not fail."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
