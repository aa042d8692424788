"""The audit log: one append-only table of every change to what the gateway serves.

Every change of routing is an event, so that "who sent traffic where, and why" can always be
answered: deploys, deletes, weight changes, bandit starts and rollbacks are recorded with who,
when, what, from and to, and why. Other parts append with :func:`append`
inside the transaction that makes their change, so a change and its event commit together.
Triggers refuse UPDATE and DELETE: the log is evidence, not state.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import AliasChoices, AwareDatetime, BaseModel, Field

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,                  -- seconds since the epoch
    actor TEXT NOT NULL,               -- who: 'key:<id>' for API keys
    action TEXT NOT NULL,              -- push, restore, delete, ...
    model TEXT,
    version TEXT,
    from_value TEXT,                   -- the subject before the change (a state, a weight...)
    to_value TEXT,                     -- and after
    reason TEXT NOT NULL DEFAULT '',   -- why, as the actor said
    details TEXT NOT NULL DEFAULT '{}' -- JSON: whatever else identifies the change
) STRICT;
CREATE INDEX IF NOT EXISTS audit_log_model ON audit_log (model, id);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

MAX_PAGE = 1000
_MAX_ID = 2**63 - 1  # SQLite's largest INTEGER; a larger ``before`` means the same: every event


@dataclass(frozen=True)
class AuditEvent:
    actor: str
    action: str
    model: str | None = None
    version: str | None = None
    from_value: str | None = None
    to_value: str | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None
    """Set when read back; :func:`append` stamps the current time."""
    id: int | None = None

    def entry(self) -> AuditEntry:
        return AuditEntry(
            id=self.id,
            at=self.at,
            actor=self.actor,
            action=self.action,
            model=self.model,
            version=self.version,
            from_value=self.from_value,
            to_value=self.to_value,
            reason=self.reason,
            details=self.details,
        )


class AuditEntry(BaseModel):
    """One change in the audit log, as the admin API shows it."""

    id: int | None
    at: AwareDatetime | None
    actor: str
    """Who made the change: ``key:<id>`` for an API key."""
    action: str
    model: str | None
    version: str | None
    from_value: str | None = Field(
        validation_alias=AliasChoices("from", "from_value"), serialization_alias="from"
    )
    to_value: str | None = Field(validation_alias=AliasChoices("to", "to_value"), serialization_alias="to")
    reason: str
    details: dict[str, Any]


def now() -> datetime:
    return datetime.now(UTC)


def append(connection: sqlite3.Connection, event: AuditEvent) -> None:
    """Append ``event``; call it inside the transaction that makes the change."""
    connection.execute(
        "INSERT INTO audit_log (at, actor, action, model, version, from_value, to_value, reason, details)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            time.time(),
            event.actor,
            event.action,
            event.model,
            event.version,
            event.from_value,
            event.to_value,
            event.reason,
            json.dumps(event.details, sort_keys=True),
        ),
    )


def events(
    connection: sqlite3.Connection,
    *,
    model: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[AuditEvent]:
    """Newest first, of one model, actor or action when given; ``before`` (an event id) pages back
    through older ones."""
    clauses: list[str] = ["1 = 1"]
    parameters: list[str | int] = []
    for column, value in (("model", model), ("actor", actor), ("action", action)):
        if value is not None:
            clauses.append(f"{column} = ?")
            parameters.append(value)
    if before is not None:
        clauses.append("id < ?")
        parameters.append(min(before, _MAX_ID))
    rows = connection.execute(
        f"SELECT * FROM audit_log WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?",
        (*parameters, max(1, min(limit, MAX_PAGE))),
    ).fetchall()
    return [_event(row) for row in rows]


def _event(row: sqlite3.Row) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        at=datetime.fromtimestamp(row["at"], UTC),
        actor=row["actor"],
        action=row["action"],
        model=row["model"],
        version=row["version"],
        from_value=row["from_value"],
        to_value=row["to_value"],
        reason=row["reason"],
        details=json.loads(row["details"]),
    )
