"""Reading a package safely: the gateway calls this on every upload.

Nothing is extracted: entries stream through size bounds and sha256 into memory (``source/``
entries are only hashed). Every failure is a PackageError naming the entry and the problem.
Neither TensorFlow nor scikit-learn is imported, and nothing is unpickled.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from core.errors import PackageError
from modelpkg.archive import (
    Entry,
    Limits,
    Source,
    checked_entries,
    open_archive,
    read_entry,
    sha256_of,
)
from modelpkg.manifest import (
    MANIFEST_ENTRY,
    MODEL_ENTRY,
    SAMPLES_ENTRY,
    SOURCE_PREFIX,
    Manifest,
    first_error,
    parse_manifest,
)
from modelpkg.onnx_checks import check_model, external_data, parse_model, write_model
from modelpkg.reference import REFERENCE_ENTRY, ReferenceProfile, parse_profile
from modelpkg.samples import Samples, parse_samples
from modelpkg.signature import check_array, check_signature

REQUIRED_ENTRIES = (MANIFEST_ENTRY, MODEL_ENTRY, SAMPLES_ENTRY)


@dataclass(frozen=True)
class Package:
    """A package that passed every check: what the serving side needs, and its digest."""

    manifest: Manifest
    digest: str
    model: bytes
    """The bytes of model.onnx."""
    samples: Samples
    external_data: dict[str, bytes] = field(default_factory=dict)
    """Files model.onnx keeps tensor data in, by the name it refers to them with."""
    reference: ReferenceProfile | None = None
    """The reference profile, when the package has one."""

    def write_model(self, folder: Path) -> Path:
        """Write model.onnx (and its external data files) into ``folder``; return its path."""
        return write_model(folder, self.model, self.external_data)

    @contextmanager
    def model_folder(self) -> Iterator[Path]:
        """model.onnx in a temporary folder, removed afterwards."""
        with tempfile.TemporaryDirectory(prefix="mdeploy-model-") as folder:
            yield self.write_model(Path(folder))


def read_package(source: Source, limits: Limits | None = None) -> Package:
    """Open, bound-check, hash-check and parse a package; refuse anything inconsistent."""
    limits = limits or Limits()
    with open_archive(source, limits) as archive:
        infos = {info.filename: info for info in checked_entries(archive, limits)}
        _require(infos)
        manifest = parse_manifest(
            _read(archive, infos[MANIFEST_ENTRY], limits.max_manifest_bytes).data or b""
        )
        _check_listing(manifest, infos)
        entries = {
            name: _read_listed(archive, info, limits.max_entry_bytes, manifest.files[name])
            for name, info in infos.items()
            if name != MANIFEST_ENTRY
        }
    return _assemble(manifest, sha256_of(source), entries)


def _require(infos: dict[str, zipfile.ZipInfo]) -> None:
    for name in REQUIRED_ENTRIES:
        if name not in infos:
            raise PackageError(f"package has no {name!r} entry")


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> Entry:
    if info.file_size > limit:
        raise PackageError(f"entry {info.filename!r} is {info.file_size} bytes; the limit is {limit}")
    return read_entry(archive, info, limit, keep=True)


def _check_listing(manifest: Manifest, infos: dict[str, zipfile.ZipInfo]) -> None:
    present = set(infos) - {MANIFEST_ENTRY}
    missing = sorted(set(manifest.files) - present)
    if missing:
        raise PackageError(f"the manifest lists {missing[0]!r} but the package has no such entry")
    unlisted = sorted(present - set(manifest.files))
    if unlisted:
        raise PackageError(f"entry {unlisted[0]!r} is not listed in the manifest")


def _read_listed(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, sha256: str) -> Entry:
    entry = read_entry(archive, info, limit, keep=not info.filename.startswith(SOURCE_PREFIX))
    if entry.sha256 != sha256:
        raise PackageError(
            f"entry {info.filename!r} does not match its sha256 in the manifest (altered or corrupt)"
        )
    return entry


def _assemble(manifest: Manifest, digest: str, entries: dict[str, Entry]) -> Package:
    raw = entries[MODEL_ENTRY].data or b""
    model = parse_model(raw)
    external = {name: entries[name].data or b"" for name in external_data(model, _sizes(entries))}
    _check_extra(entries, external)
    check_model(model, raw, external)
    check_signature(model, manifest.signature)
    samples = parse_samples(entries[SAMPLES_ENTRY].data or b"")
    _check_samples(samples, manifest)
    return Package(
        manifest=manifest,
        digest=digest,
        model=raw,
        samples=samples,
        external_data=external,
        reference=_reference(manifest, entries),
    )


def _reference(manifest: Manifest, entries: dict[str, Entry]) -> ReferenceProfile | None:
    entry = entries.get(REFERENCE_ENTRY)
    if entry is None:
        if manifest.reference is not None:
            raise PackageError(
                f"the manifest describes a reference profile but there is no {REFERENCE_ENTRY!r}"
            )
        return None
    if manifest.reference is None or manifest.reference.sha256 != entry.sha256:
        raise PackageError(f"{REFERENCE_ENTRY!r} does not match the manifest's reference profile")
    try:
        return parse_profile(entry.data or b"")
    except ValidationError as error:
        raise PackageError(
            f"{REFERENCE_ENTRY!r} is not a valid reference profile: {first_error(error)}"
        ) from None


def _sizes(entries: dict[str, Entry]) -> dict[str, int]:
    return {name: entry.size for name, entry in entries.items()}


def _check_extra(entries: dict[str, Entry], external: dict[str, bytes]) -> None:
    extra = sorted(
        name
        for name in entries
        if name not in REQUIRED_ENTRIES
        and name not in external
        and name != REFERENCE_ENTRY
        and not name.startswith(SOURCE_PREFIX)
    )
    if extra:
        raise PackageError(f"entry {extra[0]!r} is not part of the package format")


def _check_samples(samples: Samples, manifest: Manifest) -> None:
    signature = manifest.signature
    for kind, arrays, specs in (
        ("input", samples.inputs, signature.inputs),
        ("output", samples.outputs, signature.outputs),
    ):
        if set(arrays) != {spec.name for spec in specs}:
            raise PackageError(
                f"samples.npz {kind}s are {sorted(arrays)}; the signature has {[s.name for s in specs]}"
            )
        for spec in specs:
            check_array(kind, spec.name, arrays[spec.name], spec)
