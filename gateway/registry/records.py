"""What the registry answers with: version records, model summaries, push results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel

from gateway.registry.tables import State
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


class VersionDetail(VersionInfo):
    """One version with its package's manifest."""

    manifest: Manifest


class ModelInfo(BaseModel):
    """A model and every version it has had."""

    name: str
    default_version: str | None
    """The version requests without one get; null when no version is live."""
    versions: list[VersionInfo]


class PushOutcome(BaseModel):
    """What a push did (``status``) and to which version."""

    status: PushStatus
    name: str
    version: str
    package_version: str
    digest: str
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

    def info(self) -> VersionInfo:
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
        )

    def detail(self) -> VersionDetail:
        return VersionDetail(**dict(self.info()), manifest=self.manifest)


@dataclass(frozen=True)
class ModelSummary:
    name: str
    default_version: int | None
    """The version requests without one get; None when no version is live."""
    versions: list[VersionRecord]

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            default_version=str(self.default_version) if self.default_version is not None else None,
            versions=[record.info() for record in self.versions],
        )


class PushStatus(StrEnum):
    CREATED = "created"
    """A new version is live."""
    RESTORED = "restored"
    """A deleted version's package was pushed again: it is live again under its old number."""
    UNCHANGED = "unchanged"
    """The package is live already; nothing was done."""


@dataclass(frozen=True)
class PushResult:
    status: PushStatus
    record: VersionRecord

    @property
    def message(self) -> str:
        what = f"model '{self.record.model}' version {self.record.version}"
        if self.status is PushStatus.UNCHANGED:
            return f"package sha256:{self.record.digest} is already live as {what}; nothing changed"
        verb = "restored" if self.status is PushStatus.RESTORED else "pushed"
        return f"{verb} {what} (package version {self.record.package_version})"

    def outcome(self) -> PushOutcome:
        record = self.record
        return PushOutcome(
            status=self.status,
            name=record.model,
            version=str(record.version),
            package_version=record.package_version,
            digest=record.digest,
            message=self.message,
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
