"""Releases: what the registry's changes mean for traffic, in one place for every front end.

The registry loads and retires versions; the router decides which of them serve. Releases join
the two, so the admin API, Triton's repository extension and the gRPC door behave alike:

* a push loads the version; the model's first version goes live, a later one is **staged**
  (it answers only requests that name it) unless the push asks to promote it;
* a version that serves (live, or an arm of a rollout) is deleted only when forced, and then
  the traffic moves first: the newest remaining version goes live (audited), or, with the
  model's last version, the deployment goes too;
* load and unload (Triton's names) are a push of the newest deleted package and a forced
  delete of every loaded version;
* an evaluation runs a labelled set through the serving path (``gateway.evaluation``), is
  recorded on the version with its audit event, and promotes the version only when every gate
  passes. A model's default gates (``set_gates``) evaluate every later push the same way, and
  promote it when they pass if the model says so (``auto_promote``) or the push asks to.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from core.errors import Conflict, NotFound
from core.gates import parse_gates
from gateway.database.engine import Database
from gateway.dataplane import DataPlane
from gateway.evaluation import Evaluation, evaluate, read_eval_set
from gateway.registry import audit
from gateway.registry.evaluations import EvaluationStore, GateConfig
from gateway.registry.records import ModelInfo, PushOutcome, PushStatus, VersionDetail, VersionRecord
from gateway.registry.service import PhaseObserver, Registry, ignore_phase
from gateway.routing.router import Router

UNLOAD_REASON = "RepositoryModelUnload"


class PushReport(PushOutcome):
    """What a push did, and the evaluation the model's default gates ran on it (if any)."""

    evaluation: Evaluation | None = None


class VersionReport(VersionDetail):
    """One version with its manifest, and its evaluations, newest first."""

    evaluations: list[Evaluation]


@dataclass
class Releases:
    registry: Registry
    router: Router
    dataplane: DataPlane
    evaluations: EvaluationStore
    database: Database
    max_eval_rows: int = 100_000

    async def push(
        self, upload: Path, actor: str, *, promote: bool = False, observe: PhaseObserver = ignore_phase
    ) -> tuple[PushStatus, PushReport]:
        """Load the package at ``upload``: live if it is the model's first version, staged
        otherwise; promoted when asked, past the model's default gates if it has some."""
        result = await self.registry.push(upload, actor, observe=observe)
        record = result.record
        model, version = record.model, str(record.version)
        gates = await self.database.read(self.evaluations.gates, model)
        evaluation = None
        if [served.version for served in self.registry.served_versions(model)] == [version]:
            await self.router.adopt(model, version, actor)  # the only loaded version: the model's first
        elif gates is not None and result.status is not PushStatus.UNCHANGED:
            data = await self.database.read(self.evaluations.data, gates.data_sha256)
            evaluation = await self.evaluate(
                model, version, data, gates.gates, actor, promote=promote or gates.auto_promote
            )
        elif promote and await self.router.role(model, version) != "live":
            await self.router.promote(model, version, actor, "pushed with promote")
        outcome = result.outcome(await self.router.serving(model))
        return result.status, PushReport(**dict(outcome), evaluation=evaluation)

    async def evaluate(
        self,
        model: str,
        version: str,
        data: bytes,
        gates: list[str],
        actor: str,
        *,
        promote: bool = False,
        record: bool = True,
    ) -> Evaluation:
        """Measure ``version`` on the evaluation set ``data`` and judge ``gates``; with
        ``promote``, it goes live only when every gate passes. Recorded on the version (and
        audited) unless ``record`` is false."""
        parsed = parse_gates(gates)
        served = self.registry.resolve(model, version)
        evalset = await asyncio.to_thread(read_eval_set, data, served, self.max_eval_rows)
        live = self.registry.resolve(model, await self.router.live_version(model))
        result = await evaluate(self.dataplane, served, live, evalset, parsed)
        if promote and result.passed is not False and await self.router.role(model, version) != "live":
            reason = f"passed {', '.join(gates)}" if gates else "evaluated and promoted"
            await self.router.promote(model, version, actor, reason)
            result.promoted = True
        if record:
            await self._record(result, actor)
        return result

    async def _record(self, result: Evaluation, actor: str) -> None:
        result.at = audit.now()
        result.by = actor
        verdict = {True: "passed", False: "failed", None: "measured"}[result.passed]
        failed = [g.reason for g in result.gates if not g.passed]
        event = audit.AuditEvent(
            actor=actor,
            action="evaluate",
            model=result.model,
            version=result.version,
            to_value=f"{verdict}{' and promoted' if result.promoted else ''}",
            reason="; ".join(failed),
            details={
                "metrics": result.metrics,
                "gates": [g.model_dump() for g in result.gates],
                "rows": result.rows,
                "data_sha256": result.data_sha256,
            },
        )

        def write(connection: sa.Connection) -> None:
            self.evaluations.record(connection, result.model, result.version, actor, result.model_dump_json())
            audit.append(connection, event)

        await self.database.run(write)

    async def set_gates(
        self, model: str, gates: list[str], auto_promote: bool, data: bytes, actor: str
    ) -> GateConfig:
        """``model``'s default gates and evaluation set, checked against its live version."""
        parse_gates(gates)
        served = self.registry.resolve(model, await self.router.live_version(model))
        evalset = await asyncio.to_thread(read_eval_set, data, served, self.max_eval_rows)
        event = audit.AuditEvent(
            actor=actor,
            action="gates-set",
            model=model,
            to_value=", ".join(gates) + (" (auto-promote)" if auto_promote else ""),
            details={"data_sha256": evalset.digest, "rows": evalset.rows},
        )

        def write(connection: sa.Connection) -> GateConfig | None:
            self.evaluations.save_data(connection, data, evalset.digest)
            self.evaluations.set_gates(
                connection, model, gates, auto_promote, evalset.digest, evalset.rows, actor
            )
            audit.append(connection, event)
            return self.evaluations.gates(connection, model)

        config = await self.database.run(write)
        assert config is not None
        return config

    async def gates(self, model: str) -> GateConfig:
        config = await self.database.read(self.evaluations.gates, model)
        if config is None:
            how = f"mdeploy gates set {model} --eval eval.npz --gate ..."
            raise NotFound(f"model '{model}' has no default gates; set them with: {how}")
        return config

    async def clear_gates(self, model: str, actor: str) -> None:
        def write(connection: sa.Connection) -> None:
            if not self.evaluations.clear_gates(connection, model):
                raise NotFound(f"model '{model}' has no default gates")
            audit.append(connection, audit.AuditEvent(actor=actor, action="gates-clear", model=model))

        await self.database.run(write)

    async def version_report(self, model: str, version: int) -> VersionReport:
        record = await self.registry.version_record(model, version)
        serving = await self.router.serving(model) if self.registry.is_loaded(model) else None
        stored = await self.database.read(self.evaluations.of_version, model, str(version))
        evaluations = [Evaluation.model_validate_json(text) for text in stored]
        return VersionReport(**dict(record.detail(serving)), evaluations=evaluations)

    async def delete_version(
        self, model: str, version: int, actor: str, *, force: bool, reason: str
    ) -> VersionRecord:
        """Retire ``version``; one that serves only with ``force``, its traffic moved first."""
        role = await self.router.role(model, str(version))
        if role is not None:
            if not force:
                raise Conflict(self._in_use(model, version, role))
            await self.router.repoint(model, str(version), actor, reason or f"version {version} deleted")
        return await self.registry.delete_version(model, version, actor, forced=force, reason=reason)

    async def unload(self, model: str, actor: str, via: str) -> None:
        """Triton's RepositoryModelUnload: every loaded version of ``model`` is deleted."""
        loaded = sorted(int(v.version) for v in self.registry.served_versions(model))
        for version in sorted(loaded, reverse=True):
            await self.delete_version(model, version, actor, force=True, reason=f"{UNLOAD_REASON} over {via}")

    async def load(self, model: str, actor: str) -> None:
        """Triton's RepositoryModelLoad: a model with no loaded version gets its newest deleted one
        back, live (nothing changes for a model that is loaded)."""
        upload = await self.registry.restorable_upload(model)
        if upload is not None:
            await self.push(upload, actor)

    async def model_info(self, model: str) -> ModelInfo:
        summary = await self.registry.model_summary(model)
        return summary.info(await self.router.serving(model) if summary.loaded else None)

    async def models(self, *, include_retired: bool) -> list[ModelInfo]:
        return [
            summary.info(await self.router.serving(summary.name) if summary.loaded else None)
            for summary in await self.registry.models(include_retired=include_retired)
        ]

    def _in_use(self, model: str, version: int, role: str) -> str:
        deployment = self.router.deployment(model)
        what = deployment.describe() if deployment is not None else role
        if role == "live":
            consequence = "it is live: requests that name no version get it"
        else:
            consequence = f"it is the {role} version of the rollout ({what})"
        return (
            f"model '{model}' version {version} was not deleted: {consequence}; promote or roll back to "
            f"another version first, or pass force=true to delete it and move its traffic to the newest "
            f"remaining version"
        )
