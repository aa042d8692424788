"""Deployments: per model, the policy that routes requests between versions, and its stable version.

One row per model in the shared database. Every change (rollout, weight change, rollback,
promotion, automatic rollback) is written in one transaction with its audit event (decision
6), and guarded by the row's generation so two gateways cannot both change what they read.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from core.errors import Conflict
from gateway.db import ensure_schema
from gateway.registry import audit
from gateway.routing.guard import GuardSpec
from gateway.routing.policies import PolicySpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    model TEXT PRIMARY KEY,
    spec TEXT NOT NULL,         -- PolicySpec as JSON
    guard TEXT NOT NULL,        -- GuardSpec as JSON
    stable TEXT NOT NULL,       -- the version rollbacks return to
    generation INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL
) STRICT;
"""


@dataclass(frozen=True)
class Deployment:
    model: str
    spec: PolicySpec
    guard: GuardSpec
    stable: str
    generation: int

    @property
    def candidates(self) -> list[str]:
        """Versions under trial: every arm but the stable one (and a shadow's candidate)."""
        versions = [v for v in self.spec.versions if v != self.stable]
        if self.spec.candidate and self.spec.candidate not in versions:
            versions.append(self.spec.candidate)
        return versions

    def describe(self) -> str:
        if self.spec.kind == "canary" and self.spec.weights:
            weights = "/".join(f"{v}:{w:g}" for v, w in self.spec.weights.items())
            return f"canary {weights}"
        return f"{self.spec.kind} {','.join(self.spec.versions)}"


@dataclass(frozen=True)
class Change:
    """Who changes a deployment, how, and why (it becomes the audit event)."""

    actor: str
    action: str  # rollout, rollback, promote, auto-rollback
    reason: str = ""


class DeploymentStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        ensure_schema(connection, SCHEMA)
        ensure_schema(connection, audit.SCHEMA)

    def all(self) -> dict[str, Deployment]:
        rows = self._connection.execute("SELECT * FROM deployments").fetchall()
        return {row["model"]: _deployment(row) for row in rows}

    def get(self, model: str) -> Deployment | None:
        row = self._connection.execute("SELECT * FROM deployments WHERE model = ?", (model,)).fetchone()
        return _deployment(row) if row is not None else None

    def save(self, new: Deployment, expected_generation: int | None, change: Change) -> Deployment:
        """Store ``new`` with its audit event if the row still has ``expected_generation`` (None: no row)."""
        saved = Deployment(new.model, new.spec, new.guard, new.stable, (expected_generation or 0) + 1)
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            current = connection.execute("SELECT * FROM deployments WHERE model = ?", (new.model,)).fetchone()
            if (current["generation"] if current is not None else None) != expected_generation:
                raise Conflict(f"the deployment of '{new.model}' changed meanwhile; read it again and retry")
            connection.execute(
                "INSERT OR REPLACE INTO deployments VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    saved.model,
                    saved.spec.model_dump_json(),
                    saved.guard.model_dump_json(),
                    saved.stable,
                    saved.generation,
                    time.time(),
                    change.actor,
                ),
            )
            before = _deployment(current).describe() if current is not None else None
            audit.append(
                connection,
                audit.AuditEvent(
                    actor=change.actor,
                    action=change.action,
                    model=saved.model,
                    version=saved.stable,
                    from_value=before,
                    to_value=saved.describe(),
                    reason=change.reason,
                    details={"generation": saved.generation, "spec": saved.spec.model_dump(mode="json")},
                ),
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return saved


def _deployment(row: sqlite3.Row) -> Deployment:
    return Deployment(
        row["model"],
        PolicySpec.model_validate_json(row["spec"]),
        GuardSpec.model_validate_json(row["guard"]),
        row["stable"],
        row["generation"],
    )
