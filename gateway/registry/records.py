"""What the registry answers with: version records, model summaries, push results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.registry.tables import State
from modelpkg import Manifest


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


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

    def to_json(self, *, manifest: bool = False) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": self.model,
            "version": str(self.version),
            "package_version": self.package_version,
            "digest": self.digest,
            "size": self.size,
            "state": self.state.value,
            "description": self.manifest.description,
            "framework": self.manifest.framework.name,
            "pushed_by": self.pushed_by,
            "pushed_at": iso(self.pushed_at),
            "retired_by": self.retired_by,
            "retired_at": iso(self.retired_at),
        }
        if manifest:
            document["manifest"] = self.manifest.model_dump(mode="json")
        return document


@dataclass(frozen=True)
class ModelSummary:
    name: str
    default_version: int | None
    """The version requests without one get; None when no version is live."""
    versions: list[VersionRecord]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default_version": str(self.default_version) if self.default_version is not None else None,
            "versions": [record.to_json() for record in self.versions],
        }


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

    def to_json(self) -> dict[str, Any]:
        record = self.record
        return {
            "status": self.status.value,
            "name": record.model,
            "version": str(record.version),
            "package_version": record.package_version,
            "digest": record.digest,
            "message": self.message,
        }


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
