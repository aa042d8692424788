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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import AliasChoices, AwareDatetime, BaseModel, Field

from gateway.database.legacy import execute
from gateway.database.schema import audit_log

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


def append(connection: sqlite3.Connection | sa.Connection, event: AuditEvent) -> None:
    """Append ``event``; call it inside the transaction that makes the change."""
    execute(
        connection,
        sa.insert(audit_log).values(
            at=time.time(),
            actor=event.actor,
            action=event.action,
            model=event.model,
            version=event.version,
            from_value=event.from_value,
            to_value=event.to_value,
            reason=event.reason,
            details=json.dumps(event.details, sort_keys=True),
        ),
    )


_COLUMNS = (
    audit_log.c.id,
    audit_log.c.at,
    audit_log.c.actor,
    audit_log.c.action,
    audit_log.c.model,
    audit_log.c.version,
    audit_log.c.from_value,
    audit_log.c.to_value,
    audit_log.c.reason,
    audit_log.c.details,
)


def events(
    connection: sqlite3.Connection | sa.Connection,
    *,
    model: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[AuditEvent]:
    """Newest first, of one model, actor or action when given; ``before`` (an event id) pages back
    through older ones."""
    query = sa.select(*_COLUMNS).order_by(audit_log.c.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
    for column, value in (
        (audit_log.c.model, model),
        (audit_log.c.actor, actor),
        (audit_log.c.action, action),
    ):
        if value is not None:
            query = query.where(column == value)
    if before is not None:
        query = query.where(audit_log.c.id < min(before, _MAX_ID))
    return [_event(tuple(row)) for row in execute(connection, query)]


def _event(row: Sequence[Any]) -> AuditEvent:
    id_, at, actor, action, model, version, from_value, to_value, reason, details = row
    return AuditEvent(
        id=int(id_),
        at=datetime.fromtimestamp(float(at), UTC),
        actor=str(actor),
        action=str(action),
        model=model,
        version=version,
        from_value=from_value,
        to_value=to_value,
        reason=str(reason),
        details=json.loads(str(details)),
    )
