"""SQLAlchemy Core statements on the gateway's plain ``sqlite3`` connection.

While parts of the gateway still hold the ``sqlite3`` connection itself (those not yet moved to
:class:`gateway.database.engine.Database`), a statement shared with the moved parts (an audit
event...) is written once in SQLAlchemy Core and run on either connection through
:func:`execute`.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.base import Executable

_DIALECT = sqlite.dialect(paramstyle="qmark")


def execute(
    connection: sqlite3.Connection | sa.Connection, statement: Executable
) -> list[sa.Row[tuple[object, ...]]] | list[sqlite3.Row]:
    """Run ``statement``; its rows (none for a change)."""
    if isinstance(connection, sa.Connection):
        result = connection.execute(statement)
        return list(result.all()) if result.returns_rows else []
    compiled = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
    parameters = compiled.construct_params()
    cursor = connection.execute(str(compiled), [parameters[name] for name in compiled.positiontup or ()])
    return cursor.fetchall()
