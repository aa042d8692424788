"""What the registry answers with: version records, model summaries, push results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel

from gateway.registry.tables import State
from gateway.serving import Role, Serving
from modelpkg import Manifest


class VersionInfo(BaseModel):
    """One version of a model as the admin API lists it."""

    name: str
    version: str
    """The registry's number for it (1, 2, ...), the one requests name."""
    package_version: str
    """The version string in the package's manifest."""
    digest: str
    """sha256 of the package file."""
    size: int
    state: State
    description: str
    framework: str
    pushed_by: str
    pushed_at: AwareDatetime
    retired_by: str | None
    retired_at: AwareDatetime | None
    role: Role | None = None
    """What the version does for requests naming none: live, stable, candidate, shadow, or staged
    (loaded, answering only requests that name it); null once deleted."""


class VersionDetail(VersionInfo):
    """One version with its package's manifest."""

    manifest: Manifest


class ModelInfo(BaseModel):
    """A model and every version it has had."""

    name: str
    default_version: str | None
    """The version every request naming none gets; null while a rollout splits them (see
    ``serving``) or when no version is loaded."""
    serving: Serving | None
    """What serves the model (null when no version is loaded)."""
    versions: list[VersionInfo]


class PushOutcome(BaseModel):
    """What a push did (``status``) and to which version."""

    status: PushStatus
    name: str
    version: str
    package_version: str
    digest: str
    role: Role
    """live (the model's first version, or pushed with promote) or staged."""
    serving: Serving
    """What serves the model after the push."""
    message: str


@dataclass(frozen=True)
class VersionRecord:
    model: str
    version: int
    """The backend's (Triton's) version number."""
    package_version: str
    """The version string in the package's manifest."""
    digest: str
    size: int
    state: State
    manifest: Manifest
    pushed_by: str
    pushed_at: datetime
    retired_by: str | None
    retired_at: datetime | None

    def info(self, serving: Serving | None = None) -> VersionInfo:
        role = serving.role_of(str(self.version)) if serving and self.state is State.LIVE else None
        return VersionInfo(
            name=self.model,
            version=str(self.version),
            package_version=self.package_version,
            digest=self.digest,
            size=self.size,
            state=self.state,
            description=self.manifest.description,
            framework=self.manifest.framework.name,
            pushed_by=self.pushed_by,
            pushed_at=self.pushed_at,
            retired_by=self.retired_by,
            retired_at=self.retired_at,
            role=role,
        )

    def detail(self, serving: Serving | None = None) -> VersionDetail:
        return VersionDetail(**dict(self.info(serving)), manifest=self.manifest)


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: list[VersionRecord]

    @property
    def loaded(self) -> bool:
        return any(record.state is State.LIVE for record in self.versions)

    def info(self, serving: Serving | None) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            default_version=serving.live_version if serving else None,
            serving=serving,
            versions=[record.info(serving) for record in self.versions],
        )


class PushStatus(StrEnum):
    CREATED = "created"
    """A new version is loaded."""
    RESTORED = "restored"
    """A deleted version's package was pushed again: it is loaded again under its old number."""
    UNCHANGED = "unchanged"
    """The package is loaded already; nothing was done."""


@dataclass(frozen=True)
class PushResult:
    status: PushStatus
    record: VersionRecord

    @property
    def message(self) -> str:
        what = f"model '{self.record.model}' version {self.record.version}"
        if self.status is PushStatus.UNCHANGED:
            return f"package sha256:{self.record.digest} is already loaded as {what}; nothing changed"
        verb = "restored" if self.status is PushStatus.RESTORED else "pushed"
        return f"{verb} {what} (package version {self.record.package_version})"

    def outcome(self, serving: Serving) -> PushOutcome:
        record = self.record
        version = str(record.version)
        role = serving.role_of(version)
        if role == "live":
            after = "live: requests that name no version get it"
        elif role == "staged":
            after = (
                f"staged: it answers requests that name it; the others still get {serving.summary} "
                f"(promote it with: mdeploy promote {record.model} {version})"
            )
        else:
            after = f"in the rollout as {role}: {serving.summary}"
        return PushOutcome(
            status=self.status,
            name=record.model,
            version=version,
            package_version=record.package_version,
            digest=record.digest,
            role=role,
            serving=serving,
            message=f"{self.message}; {after}",
        )


class PushPhase(StrEnum):
    """The steps of a push, in order; each is reported as it completes."""

    VERIFIED = "verified"
    RESERVED = "reserved"
    """The pending row holds the version number."""
    STORED = "stored"
    """The package is in the store under its digest."""
    LAID_OUT = "laid_out"
    """The version folder is in the Triton repository."""
    DEPLOYED = "deployed"
    """Every healthy backend loaded it."""
    COMMITTED = "committed"
    """The version is live (row and audit event committed together)."""
