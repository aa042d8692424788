"""The in-memory catalog the data plane reads on every request: live versions, by model.

A snapshot is built from the database and replaced whole (one attribute assignment), so a
request never sees half an update and lookups take no lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.errors import NotFound
from core.signature import Signature, TensorSpec
from gateway.catalog import ServedVersion
from gateway.registry.triton_config import PLATFORM, max_batch_size
from modelpkg import Manifest

_NAMES_SHOWN = 20


@dataclass(frozen=True)
class LiveVersion:
    model: str
    version: int
    manifest: Manifest
    digest: str
    """Its package's: the files of a version not laid out on this host yet come from there."""


@dataclass(frozen=True)
class ServedModel:
    name: str
    versions: dict[int, ServedVersion]

    @property
    def newest(self) -> ServedVersion:
        """The highest loaded version (which one serves is the router's business)."""
        return self.versions[max(self.versions)]


class Snapshot:
    """Live versions by model, as of one read of the database."""

    def __init__(self, live: Iterable[LiveVersion]) -> None:
        grouped: dict[str, list[LiveVersion]] = {}
        for item in live:
            grouped.setdefault(item.model, []).append(item)
        self.models = {name: _served_model(name, items) for name, items in sorted(grouped.items())}

    def model(self, name: str) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            raise NotFound(f"model '{name}' is not served; {_listing('models', sorted(self.models))}")
        return served

    def resolve(self, name: str, version: str | None) -> ServedVersion:
        served = self.model(name)
        if version is None or version == "":
            return served.newest
        number = int(version) if version.isdecimal() and version.isascii() else None
        if number is None or number not in served.versions:
            live = [str(v) for v in sorted(served.versions)]
            raise NotFound(
                f"model '{name}' has no live version '{version}'; {_listing('live versions', live)}"
            )
        return served.versions[number]


def _served_model(name: str, items: list[LiveVersion]) -> ServedModel:
    # One config serves every version (Triton's rule), described by the newest manifest.
    batch = max_batch_size(max(items, key=lambda item: item.version).manifest)
    return ServedModel(name, {item.version: served_version(item, batch) for item in items})


def served_version(item: LiveVersion, batch_size: int) -> ServedVersion:
    manifest = item.manifest
    labels = manifest.labels
    return ServedVersion(
        name=item.model,
        version=str(item.version),
        signature=Signature(
            tuple(TensorSpec(s.name, s.datatype, tuple(s.shape)) for s in manifest.signature.inputs),
            tuple(TensorSpec(s.name, s.datatype, tuple(s.shape)) for s in manifest.signature.outputs),
        ),
        max_batch_size=batch_size,
        labels=tuple(labels.names) if labels else (),
        label_output=labels.output if labels else None,
        platform=PLATFORM,
    )


def _listing(what: str, names: list[str]) -> str:
    if not names:
        return f"there are no {what}"
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
    return f"{what}: {shown}{more}"
