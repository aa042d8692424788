"""The package store: every pushed package, byte for byte, named by its sha256.

Content addressing makes writes idempotent (the same digest is the same bytes) and lets a
file be moved in with one atomic rename: a reader sees the whole package or none.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = ".pkg"


class PackageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / f"{digest}{_SUFFIX}"

    def put(self, source: Path, digest: str) -> Path:
        """Move ``source`` (same file system) in as ``digest``, durably."""
        target = self.path(digest)
        with open(source, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(source, target)
        _sync_folder(self.root)
        return target

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> set[str]:
        return {p.stem for p in self.root.glob(f"*{_SUFFIX}") if _DIGEST.match(p.stem)}


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename into it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
