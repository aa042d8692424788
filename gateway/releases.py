"""Releases: what the registry's changes mean for traffic, in one place for every front end.

The registry loads and retires versions; the router decides which of them serve. Releases join
the two, so the admin API, Triton's repository extension and the gRPC door behave alike:

* a push loads the version; the model's first version goes live, a later one is **staged**
  (it answers only requests that name it) unless the push asks to promote it;
* a version that serves (live, or an arm of a rollout) is deleted only when forced, and then
  the traffic moves first: the newest remaining version goes live (audited), or, with the
  model's last version, the deployment goes too;
* load and unload (Triton's names) are a push of the newest deleted package and a forced
  delete of every loaded version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import Conflict
from gateway.registry.records import ModelInfo, PushOutcome, PushStatus, VersionRecord
from gateway.registry.service import PhaseObserver, Registry, ignore_phase
from gateway.routing.router import Router
from gateway.serving import Serving

UNLOAD_REASON = "RepositoryModelUnload"


@dataclass
class Releases:
    registry: Registry
    router: Router

    async def push(
        self, upload: Path, actor: str, *, promote: bool = False, observe: PhaseObserver = ignore_phase
    ) -> tuple[PushStatus, PushOutcome]:
        """Load the package at ``upload``: live if it is the model's first version (or
        ``promote``), staged otherwise."""
        result = await self.registry.push(upload, actor, observe=observe)
        record = result.record
        model, version = record.model, str(record.version)
        if [served.version for served in self.registry.served_versions(model)] == [version]:
            self.router.adopt(model, version, actor)  # the only loaded version: the model's first
        elif promote and self.router.role(model, version) != "live":
            await self.router.promote(model, version, actor, "pushed with promote")
        return result.status, result.outcome(await self.router.serving(model))

    async def delete_version(
        self, model: str, version: int, actor: str, *, force: bool, reason: str
    ) -> VersionRecord:
        """Retire ``version``; one that serves only with ``force``, its traffic moved first."""
        role = self.router.role(model, str(version))
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
        summary = self.registry.model_summary(model)
        return summary.info(await self.router.serving(model) if summary.loaded else None)

    async def models(self, *, include_retired: bool) -> list[ModelInfo]:
        return [
            summary.info(await self.router.serving(summary.name) if summary.loaded else None)
            for summary in self.registry.models(include_retired=include_retired)
        ]

    async def serving(self, model: str) -> Serving:
        return await self.router.serving(model)

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
