"""Deployments: per model, the policy that routes requests between versions, and its stable version.

One row per served model in the shared database: what serves is this one fact. A model's first
version goes live as a ``pinned`` deployment; later versions are staged until a change names
them. Every change (go-live, rollout, weight change, promotion, rollback, automatic rollback) is
written in one transaction with its audit event (decision 6), and guarded by the row's
generation so two gateways cannot both change what they read.

Each change that moves traffic forward keeps the state it replaced on the row's ``history``
(newest last, at most ``MAX_HISTORY``); a rollback without a target returns to the newest of
them, so ``rollback`` always undoes the last change still in effect.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from core.errors import Conflict
from gateway.database.engine import Database
from gateway.database.notifications import notify
from gateway.database.schema import deployments
from gateway.database.statements import upsert
from gateway.registry import audit
from gateway.routing.guard import GuardSpec
from gateway.routing.policies import PolicySpec

MAX_HISTORY = 50
DEPLOYMENTS_CHANNEL = "mdeploy_deployments"
"""Notified (with the model's name) by every change, so gateways on other hosts adopt it at once
(PostgreSQL); they also re-read every ``deployment_refresh_s``."""


@dataclass(frozen=True)
class LiveState:
    """What served a model at one time: a policy and its stable version."""

    spec: PolicySpec
    stable: str

    def describe(self) -> str:
        return describe(self.spec)

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.model_dump(mode="json"), "stable": self.stable}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LiveState:
        return cls(PolicySpec.model_validate(data["spec"]), str(data["stable"]))


def pinned(version: str) -> PolicySpec:
    return PolicySpec(kind="pinned", versions=[version])


def describe(spec: PolicySpec) -> str:
    if spec.kind == "canary" and spec.weights:
        weights = "/".join(f"{v}:{w:g}" for v, w in spec.weights.items())
        return f"canary {weights}"
    if spec.kind == "shadow":
        return f"shadow {spec.versions[0]} (copies to {spec.candidate})"
    return f"{spec.kind} {','.join(spec.versions)}"


@dataclass(frozen=True)
class Deployment:
    model: str
    spec: PolicySpec
    guard: GuardSpec
    stable: str
    generation: int
    history: tuple[LiveState, ...] = ()
    """Earlier live states, newest last: where ``rollback`` without a target returns."""
    started_at: float = field(default=0.0, compare=False)
    """When this policy began (seconds since the epoch)."""

    @property
    def state(self) -> LiveState:
        return LiveState(self.spec, self.stable)

    @property
    def live_version(self) -> str | None:
        """The version every request that names none gets; None while a rollout splits them."""
        return self.spec.versions[0] if self.spec.kind == "pinned" else None

    @property
    def candidates(self) -> list[str]:
        """Versions under trial: every arm but the stable one (and a shadow's candidate)."""
        versions = [v for v in self.spec.versions if v != self.stable]
        if self.spec.candidate and self.spec.candidate not in versions:
            versions.append(self.spec.candidate)
        return versions

    def describe(self) -> str:
        return describe(self.spec)


@dataclass(frozen=True)
class Change:
    """Who changes a deployment, how, and why (it becomes the audit event)."""

    actor: str
    action: str  # go-live, rollout, promote, rollback, auto-rollback, repoint
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    """More for the audit event: the figures of the rollout that ended, a deleted version..."""


class DeploymentStore:
    """Deployments in the gateway database; each change with its audit event, in one transaction,
    only if the row still has the generation the change was made from (else Conflict)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def all(self) -> dict[str, Deployment]:
        rows = await self._db.read(lambda c: c.execute(sa.select(deployments)).mappings().all())
        return {row["model"]: _deployment(row) for row in rows}

    async def get(self, model: str) -> Deployment | None:
        return await self._db.read(_current, model)

    async def save(self, new: Deployment, expected_generation: int | None, change: Change) -> Deployment:
        """Store ``new`` with its audit event if the row still has ``expected_generation`` (None: no row)."""
        history = new.history[-MAX_HISTORY:]
        saved = Deployment(
            new.model,
            new.spec,
            new.guard,
            new.stable,
            (expected_generation or 0) + 1,
            history,
            new.started_at or time.time(),
        )
        row = {
            "model": saved.model,
            "spec": saved.spec.model_dump_json(),
            "guard": saved.guard.model_dump_json(),
            "stable": saved.stable,
            "generation": saved.generation,
            "updated_at": time.time(),
            "updated_by": change.actor,
            "history": json.dumps([state.to_json() for state in history]),
            "started_at": saved.started_at,
        }

        def write(connection: sa.Connection) -> None:
            before = _expect(connection, new.model, expected_generation)
            connection.execute(upsert(connection, deployments, row, ["model"]))
            _audit(connection, change, saved.model, saved.stable, before, saved.describe(), saved)
            notify(connection, DEPLOYMENTS_CHANNEL, saved.model)

        await self._db.run(write)
        return saved

    async def drop(self, model: str, expected_generation: int, change: Change) -> None:
        """Remove ``model``'s deployment (it has no version left to serve), with its audit event."""

        def write(connection: sa.Connection) -> None:
            before = _expect(connection, model, expected_generation)
            connection.execute(sa.delete(deployments).where(deployments.c.model == model))
            _audit(connection, change, model, None, before, None, None)
            notify(connection, DEPLOYMENTS_CHANNEL, model)

        await self._db.run(write)


def _current(connection: sa.Connection, model: str) -> Deployment | None:
    row = connection.execute(sa.select(deployments).where(deployments.c.model == model)).mappings().first()
    return _deployment(row) if row is not None else None


def _expect(connection: sa.Connection, model: str, generation: int | None) -> str | None:
    """The current row's description, if the row still has ``generation`` (None: no row)."""
    current = _current(connection, model)
    if (current.generation if current is not None else None) != generation:
        raise Conflict(f"the deployment of '{model}' changed meanwhile; read it again and retry")
    return current.describe() if current is not None else None


def _audit(
    connection: sa.Connection,
    change: Change,
    model: str,
    version: str | None,
    before: str | None,
    after: str | None,
    saved: Deployment | None,
) -> None:
    details: dict[str, Any] = dict(change.details)
    if saved is not None:
        details |= {"generation": saved.generation, "spec": saved.spec.model_dump(mode="json")}
    audit.append(
        connection,
        audit.AuditEvent(
            actor=change.actor,
            action=change.action,
            model=model,
            version=version,
            from_value=before,
            to_value=after,
            reason=change.reason,
            details=details,
        ),
    )


def _deployment(row: Mapping[Any, Any]) -> Deployment:
    return Deployment(
        row["model"],
        PolicySpec.model_validate_json(row["spec"]),
        GuardSpec.model_validate_json(row["guard"]),
        row["stable"],
        row["generation"],
        tuple(LiveState.from_json(item) for item in json.loads(row["history"])),
        row["started_at"],
    )
