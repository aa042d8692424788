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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel

from core.errors import InvalidInput
from gateway.database.engine import Database
from gateway.database.schema import drift_alert_states, drift_alerts
from gateway.database.statements import insert_missing, upsert
from gateway.drift.report import DriftReport
from gateway.registry import audit

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
    def __init__(self, database: Database) -> None:
        self._db = database

    async def set(
        self, model: str, when: str, min_rows: int, window: str, webhook: str | None, actor: str
    ) -> AlertRule:
        """Set ``model``'s rule (checked), with its audit event; its versions' states start over."""
        conditions = parse_conditions(when)
        if not 1 <= min_rows <= MAX_MIN_ROWS:
            raise InvalidInput(f"min_rows must be between 1 and {MAX_MIN_ROWS}, not {min_rows}")
        given = ", ".join(str(condition) for condition in conditions)
        row = {
            "model": model,
            "conditions": given,
            "min_rows": min_rows,
            "window": window,
            "webhook": webhook,
            "updated_at": time.time(),
            "updated_by": actor,
        }

        def write(connection: sa.Connection) -> AlertRule:
            connection.execute(upsert(connection, drift_alerts, row, ["model"]))
            connection.execute(sa.delete(drift_alert_states).where(drift_alert_states.c.model == model))
            event = audit.AuditEvent(
                actor=actor,
                action="drift-alert-set",
                model=model,
                to_value=f"{given} over {window}, at least {min_rows} rows",
                details={"webhook": webhook} if webhook else {},
            )
            audit.append(connection, event)
            return _rule(row)

        return await self._db.run(write)

    async def clear(self, model: str, actor: str) -> bool:
        def write(connection: sa.Connection) -> bool:
            connection.execute(sa.delete(drift_alert_states).where(drift_alert_states.c.model == model))
            if connection.execute(sa.delete(drift_alerts).where(drift_alerts.c.model == model)).rowcount == 0:
                return False
            audit.append(connection, audit.AuditEvent(actor=actor, action="drift-alert-clear", model=model))
            return True

        return await self._db.run(write)

    async def rule(self, model: str) -> AlertRule | None:
        query = sa.select(drift_alerts).where(drift_alerts.c.model == model)
        row = await self._db.read(lambda c: c.execute(query).mappings().first())
        return _rule(row) if row is not None else None

    async def rules(self) -> list[AlertRule]:
        query = sa.select(drift_alerts).order_by(drift_alerts.c.model)
        return [_rule(row) for row in await self._db.read(lambda c: c.execute(query).mappings().all())]

    async def states(self, model: str) -> list[VersionAlertState]:
        table = drift_alert_states
        query = sa.select(table).where(table.c.model == model).order_by(table.c.version)
        rows = await self._db.read(lambda c: c.execute(query).mappings().all())
        return [
            VersionAlertState(
                version=row["version"],
                state=row["state"],
                since=datetime.fromtimestamp(row["changed_at"], UTC),
            )
            for row in rows
        ]

    async def change(
        self, model: str, version: str, state: Literal["ok", "firing"], then: Callable[[sa.Connection], None]
    ) -> bool:
        """Move ``version`` to ``state`` and, in the same transaction, ``then`` (its audit event);
        True only for the caller that made the change (a version first seen ok is no change)."""
        table = drift_alert_states

        def write(connection: sa.Connection) -> bool:
            first = {"model": model, "version": version, "state": "ok", "changed_at": time.time()}
            connection.execute(insert_missing(connection, table, first, ["model", "version"]))
            changed = connection.execute(
                sa.update(table)
                .where(table.c.model == model, table.c.version == version, table.c.state != state)
                .values(state=state, changed_at=time.time())
            )
            if changed.rowcount != 1:
                return False
            then(connection)
            return True

        return await self._db.run(write)


def _rule(row: Mapping[str, Any]) -> AlertRule:
    return AlertRule(
        model=row["model"],
        when=row["conditions"],
        min_rows=row["min_rows"],
        window=row["window"],
        webhook=row["webhook"],
        updated_at=datetime.fromtimestamp(row["updated_at"], UTC),
        updated_by=row["updated_by"],
    )
