"""Taking packages apart and putting (hostile) ones together with zipfile."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelpkg.archive import write_archive
from modelpkg.manifest import MANIFEST_ENTRY
from modelpkg.reference import REFERENCE_ENTRY

FIXED_TIME = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
Member = tuple[str | zipfile.ZipInfo, bytes]


def entries(package: Path | bytes) -> dict[str, bytes]:
    source = io.BytesIO(package) if isinstance(package, bytes) else package
    with zipfile.ZipFile(source) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def make_zip(members: Iterable[Member], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we write on purpose
        with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return buffer.getvalue()


def manifest_of(files: dict[str, bytes]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(files["MANIFEST.json"])
    return loaded


def relisted(files: dict[str, bytes], **changes: Any) -> dict[str, bytes]:
    """The entries with the manifest's hashes recomputed and top-level fields changed."""
    manifest = manifest_of(files) | changes
    manifest["files"] = {
        name: hashlib.sha256(data).hexdigest() for name, data in files.items() if name != "MANIFEST.json"
    }
    return files | {"MANIFEST.json": json.dumps(manifest).encode()}


def zipped(files: dict[str, bytes]) -> bytes:
    return make_zip(sorted(files.items()))


def flag_encrypted(package: bytes, name: str) -> bytes:
    """Set the 'encrypted' bit of ``name`` in the central directory (zipfile cannot write it)."""
    start = _central_record(package, name)
    flags = int.from_bytes(package[start + 8 : start + 10], "little") | 0x1
    return package[: start + 8] + flags.to_bytes(2, "little") + package[start + 10 :]


def _central_record(package: bytes, name: str) -> int:
    start = package.find(b"PK\x01\x02")
    while start >= 0:
        length = int.from_bytes(package[start + 28 : start + 30], "little")
        if package[start + 46 : start + 46 + length] == name.encode():
            return start
        start = package.find(b"PK\x01\x02", start + 4)
    raise KeyError(name)


def rewritten(source: Path, target: Path, *, keep_reference: bool, profile: bytes | None = None) -> Path:
    """``source`` written again at ``target``: without its reference profile (as packages were made
    before profiles), or with ``profile`` in place of it (its manifest left as it was)."""
    files = entries(source)
    manifest = json.loads(files.pop(MANIFEST_ENTRY))
    if keep_reference:
        files[REFERENCE_ENTRY] = profile if profile is not None else files[REFERENCE_ENTRY]
    else:
        files.pop(REFERENCE_ENTRY)
        manifest.pop("reference")
        manifest["files"].pop(REFERENCE_ENTRY)
    files[MANIFEST_ENTRY] = (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode()
    with target.open("wb") as stream:
        write_archive(stream, files)
    return target
