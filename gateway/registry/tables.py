"""The registry's tables in the gateway's SQLite database, and every query on them.

A version row is the commit point of a push: it is inserted ``pending`` (reserving its
number across processes) before anything is written outside the database, and turns
``live`` only after the package is stored, laid out and loaded. ``session`` names the
process that owns a pending row (see :mod:`gateway.registry.sessions`); a pending row whose
session is dead is a crashed push and is rolled back.

Transactions never span an ``await``: the connection is shared by the whole process, so
another coroutine's statements would land inside them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from enum import StrEnum

from gateway.db import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_models (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS registry_versions (
    model TEXT NOT NULL REFERENCES registry_models (name),
    version INTEGER NOT NULL CHECK (version > 0),
    package_version TEXT NOT NULL,     -- the manifest's own version string
    digest TEXT NOT NULL UNIQUE,       -- sha256 of the package: its identity
    size INTEGER NOT NULL,
    manifest TEXT NOT NULL,            -- MANIFEST.json
    state TEXT NOT NULL CHECK (state IN ('pending', 'live', 'retired')),
    prior_state TEXT CHECK (prior_state IN ('retired')),  -- what an aborted pending row returns to
    session TEXT,                      -- owner of a pending row
    pushed_by TEXT NOT NULL,
    pushed_at REAL NOT NULL,
    retired_by TEXT,
    retired_at REAL,
    PRIMARY KEY (model, version)
) STRICT;
CREATE INDEX IF NOT EXISTS registry_versions_state ON registry_versions (state, model);
"""


class State(StrEnum):
    PENDING = "pending"
    """A push in progress: invisible to clients, rolled back if its process dies."""
    LIVE = "live"
    """Served: the backends hold it and the catalog resolves it."""
    RETIRED = "retired"
    """Deleted: off the backends; its package stays in the store for download and audit."""


class Tables:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock first, so concurrent writers queue, not fail."""
        return transaction(self.db)

    # ---- reads ----

    def row(self, model: str, version: int) -> sqlite3.Row | None:
        return self.db.execute(  # type: ignore[no-any-return]
            "SELECT * FROM registry_versions WHERE model = ? AND version = ?", (model, version)
        ).fetchone()

    def by_digest(self, digest: str) -> sqlite3.Row | None:
        return self.db.execute(  # type: ignore[no-any-return]
            "SELECT * FROM registry_versions WHERE digest = ?", (digest,)
        ).fetchone()

    def rows(self, state: State | None = None, model: str | None = None) -> list[sqlite3.Row]:
        """Version rows ordered by model and version, optionally of one state or model."""
        clauses, parameters = ["1 = 1"], list[str]()
        if state is not None:
            clauses.append("state = ?")
            parameters.append(state.value)
        if model is not None:
            clauses.append("model = ?")
            parameters.append(model)
        return self.db.execute(
            f"SELECT * FROM registry_versions WHERE {' AND '.join(clauses)} ORDER BY model, version",
            parameters,
        ).fetchall()

    def used_versions(self, model: str) -> set[int]:
        rows = self.db.execute("SELECT version FROM registry_versions WHERE model = ?", (model,))
        return {row["version"] for row in rows}

    def model_names(self) -> list[str]:
        """Every model the registry ever managed, with or without live versions."""
        return [row["name"] for row in self.db.execute("SELECT name FROM registry_models ORDER BY name")]

    def digests(self) -> set[str]:
        return {row["digest"] for row in self.db.execute("SELECT digest FROM registry_versions")}

    # ---- writes (inside a transaction) ----

    def ensure_model(self, name: str, actor: str) -> None:
        self.db.execute(
            "INSERT INTO registry_models (name, created_at, created_by) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (name, time.time(), actor),
        )

    def insert_pending(
        self,
        model: str,
        version: int,
        *,
        package_version: str,
        digest: str,
        size: int,
        manifest: str,
        session: str,
        actor: str,
    ) -> None:
        self.db.execute(
            "INSERT INTO registry_versions (model, version, package_version, digest, size, manifest,"
            " state, session, pushed_by, pushed_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            (model, version, package_version, digest, size, manifest, session, actor, time.time()),
        )

    def reopen_retired(self, model: str, version: int, session: str) -> bool:
        """A retired version becomes pending again (its package was pushed again)."""
        cursor = self.db.execute(
            "UPDATE registry_versions SET state = 'pending', prior_state = 'retired', session = ?"
            " WHERE model = ? AND version = ? AND state = 'retired'",
            (session, model, version),
        )
        return cursor.rowcount == 1

    def make_live(self, model: str, version: int, session: str) -> bool:
        """Pending → live, only while ``session`` still owns the row."""
        cursor = self.db.execute(
            "UPDATE registry_versions SET state = 'live', prior_state = NULL, session = NULL,"
            " retired_by = NULL, retired_at = NULL"
            " WHERE model = ? AND version = ? AND state = 'pending' AND session = ?",
            (model, version, session),
        )
        return cursor.rowcount == 1

    def retire(self, model: str, version: int, actor: str) -> bool:
        cursor = self.db.execute(
            "UPDATE registry_versions SET state = 'retired', retired_by = ?, retired_at = ?"
            " WHERE model = ? AND version = ? AND state = 'live'",
            (actor, time.time(), model, version),
        )
        return cursor.rowcount == 1

    def take_over(self, model: str, version: int, dead: str | None, session: str) -> bool:
        """Claim a dead session's pending row, so only one process rolls it back."""
        cursor = self.db.execute(
            "UPDATE registry_versions SET session = ?"
            " WHERE model = ? AND version = ? AND state = 'pending' AND session IS ?",
            (session, model, version, dead),
        )
        return cursor.rowcount == 1

    def drop_pending(self, model: str, version: int, session: str) -> None:
        """The last step of a rollback: a new row goes, a re-pushed one is retired again."""
        owned = "model = ? AND version = ? AND state = 'pending' AND session = ?"
        key = (model, version, session)
        self.db.execute(
            "UPDATE registry_versions SET state = 'retired', prior_state = NULL, session = NULL"
            f" WHERE {owned} AND prior_state = 'retired'",
            key,
        )
        self.db.execute(f"DELETE FROM registry_versions WHERE {owned}", key)
