"""Drift alerts: a model's thresholds, and which of its versions are past them.

A rule is one or more conditions, any of which fires it, on a version's drift report in one
window, once that window holds at least ``min_rows`` live rows (too few rows say nothing):

* ``psi>0.2``: some feature's PSI (the largest) is above 0.2;
* ``ks>0.1``: some feature's KS statistic is above 0.1;
* ``score>0.1``: the version's score (mean PSI) is above 0.1;
* ``share>0.3``: more than 30% of the features drifted;
* ``js>0.2``: the predicted classes' Jensen-Shannon distance is above 0.2.

Each version's state (ok or firing) is a row that changes only by a conditional update, so
when several gateway processes check the same drift, exactly one of them sees the change and
writes its audit event and sends its webhook.
"""

from __future__ import annotations

import operator
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel

from core.errors import InvalidInput
from gateway.db import ensure_schema, transaction
from gateway.drift.report import DriftReport
from gateway.registry import audit

SCHEMA = """
CREATE TABLE IF NOT EXISTS drift_alerts (
    model TEXT PRIMARY KEY,
    conditions TEXT NOT NULL,   -- as given, e.g. 'psi>0.2, share>0.3'
    min_rows INTEGER NOT NULL,
    window TEXT NOT NULL,
    webhook TEXT,               -- URL that gets each change of state, signed; NULL: none
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS drift_alert_states (
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,        -- ok | firing
    changed_at REAL NOT NULL,
    PRIMARY KEY (model, version)
) STRICT;
"""
MAX_CONDITIONS = 8
MAX_WEBHOOK_CHARS = 2048
MAX_MIN_ROWS = 10_000_000

_METRICS: dict[str, Callable[[DriftReport], float | None]] = {
    "psi": lambda report: max((f.psi for f in report.features), default=None),
    "ks": lambda report: max((f.ks for f in report.features), default=None),
    "score": lambda report: report.score,
    "share": lambda report: report.drifted_share,
    "js": lambda report: report.classes_js,
}
_OPERATORS: dict[str, Callable[[float, float], bool]] = {">": operator.gt, ">=": operator.ge}
_CONDITION = re.compile(r"^\s*([a-z]+)\s*(>=|>)\s*([0-9]+(?:\.[0-9]+)?)\s*$")


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    def value(self, report: DriftReport) -> float | None:
        return _METRICS[self.metric](report)

    def holds(self, report: DriftReport) -> bool:
        value = self.value(report)
        return value is not None and _OPERATORS[self.op](value, self.threshold)


def parse_conditions(text: str) -> list[Condition]:
    """``'psi>0.2, share>=0.3'`` → conditions; InvalidInput says what a condition looks like."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts or len(parts) > MAX_CONDITIONS:
        raise InvalidInput(f"give 1 to {MAX_CONDITIONS} conditions such as 'psi>0.2', separated by commas")
    conditions = []
    for part in parts:
        match = _CONDITION.match(part)
        if match is None or match.group(1) not in _METRICS:
            raise InvalidInput(
                f"{part.strip()!r} is not a drift condition: write METRIC>NUMBER or METRIC>=NUMBER with "
                f"METRIC one of {', '.join(_METRICS)}, e.g. psi>0.2"
            )
        conditions.append(Condition(match.group(1), match.group(2), float(match.group(3))))
    return conditions


class AlertRule(BaseModel):
    model: str
    when: str
    """Conditions, any of which fires the alert (``psi>0.2, share>0.3``)."""
    min_rows: int
    """Live rows the window must hold before the alert can fire or clear."""
    window: str
    webhook: str | None
    updated_at: AwareDatetime
    updated_by: str

    @property
    def conditions(self) -> list[Condition]:
        return parse_conditions(self.when)


class VersionAlertState(BaseModel):
    version: str
    state: Literal["ok", "firing"]
    since: AwareDatetime


@dataclass(frozen=True)
class Verdict:
    """What a report says about a rule: firing or ok, or None when the window has too few rows."""

    state: Literal["ok", "firing"] | None
    breached: list[str]
    """The conditions that hold, each with the value that made it hold (``psi=1.82>0.2``)."""


def judge(rule: AlertRule, report: DriftReport) -> Verdict:
    if report.status in ("no reference", "no traffic") or report.rows < rule.min_rows:
        return Verdict(None, [])
    breached = [
        f"{condition.metric}={condition.value(report):.4g}{condition.op}{condition.threshold:g}"
        for condition in rule.conditions
        if condition.holds(report)
    ]
    return Verdict("firing" if breached else "ok", breached)


def check_webhook(url: str) -> str:
    if len(url) > MAX_WEBHOOK_CHARS or not re.match(r"^https?://[^\s/]+", url):
        raise InvalidInput(
            f"the webhook must be an http:// or https:// URL of at most {MAX_WEBHOOK_CHARS} characters"
        )
    return url


class AlertStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        ensure_schema(connection, SCHEMA)
        ensure_schema(connection, audit.SCHEMA)
        self._db = connection

    def set(
        self, model: str, when: str, min_rows: int, window: str, webhook: str | None, actor: str
    ) -> AlertRule:
        """Set ``model``'s rule (checked), with its audit event; its versions' states start over."""
        conditions = parse_conditions(when)
        if not 1 <= min_rows <= MAX_MIN_ROWS:
            raise InvalidInput(f"min_rows must be between 1 and {MAX_MIN_ROWS}, not {min_rows}")
        when = ", ".join(str(condition) for condition in conditions)
        with transaction(self._db) as connection:
            self._write(model, when, min_rows, window, webhook, actor)
            connection.execute("DELETE FROM drift_alert_states WHERE model = ?", (model,))
            audit.append(
                connection,
                audit.AuditEvent(
                    actor=actor,
                    action="drift-alert-set",
                    model=model,
                    to_value=f"{when} over {window}, at least {min_rows} rows",
                    details={"webhook": webhook} if webhook else {},
                ),
            )
        rule = self.rule(model)
        assert rule is not None
        return rule

    def clear(self, model: str, actor: str) -> bool:
        with transaction(self._db) as connection:
            connection.execute("DELETE FROM drift_alert_states WHERE model = ?", (model,))
            if connection.execute("DELETE FROM drift_alerts WHERE model = ?", (model,)).rowcount == 0:
                return False
            audit.append(connection, audit.AuditEvent(actor=actor, action="drift-alert-clear", model=model))
        return True

    def _write(
        self, model: str, when: str, min_rows: int, window: str, webhook: str | None, actor: str
    ) -> None:
        self._db.execute(
            "INSERT INTO drift_alerts (model, conditions, min_rows, window, webhook, updated_at, updated_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET"
            " conditions = excluded.conditions, min_rows = excluded.min_rows, window = excluded.window,"
            " webhook = excluded.webhook,"
            " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            (model, when, min_rows, window, webhook, time.time(), actor),
        )

    def rule(self, model: str) -> AlertRule | None:
        row = self._db.execute("SELECT * FROM drift_alerts WHERE model = ?", (model,)).fetchone()
        return _rule(row) if row is not None else None

    def rules(self) -> list[AlertRule]:
        return [_rule(row) for row in self._db.execute("SELECT * FROM drift_alerts ORDER BY model")]

    def states(self, model: str) -> list[VersionAlertState]:
        rows = self._db.execute(
            "SELECT version, state, changed_at FROM drift_alert_states WHERE model = ? ORDER BY version",
            (model,),
        )
        return [
            VersionAlertState(version=row[0], state=row[1], since=datetime.fromtimestamp(row[2], UTC))
            for row in rows
        ]

    def change(self, model: str, version: str, state: Literal["ok", "firing"]) -> bool:
        """Move ``version`` to ``state``; True only for the caller that made the change (a version
        first seen ok is no change)."""
        self._db.execute(
            "INSERT OR IGNORE INTO drift_alert_states (model, version, state, changed_at)"
            " VALUES (?, ?, 'ok', ?)",
            (model, version, time.time()),
        )
        cursor = self._db.execute(
            "UPDATE drift_alert_states SET state = ?, changed_at = ?"
            " WHERE model = ? AND version = ? AND state != ?",
            (state, time.time(), model, version, state),
        )
        return cursor.rowcount == 1


def _rule(row: sqlite3.Row) -> AlertRule:
    return AlertRule(
        model=row["model"],
        when=row["conditions"],
        min_rows=row["min_rows"],
        window=row["window"],
        webhook=row["webhook"],
        updated_at=datetime.fromtimestamp(row["updated_at"], UTC),
        updated_by=row["updated_by"],
    )
