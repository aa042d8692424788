"""Where a package came from: creation time, creator, code commit, data file hashes."""

from __future__ import annotations

import getpass
import hashlib
import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from core.errors import InvalidInput
from modelpkg.manifest import DataFile

_CHUNK = 1 << 20


def created_at(explicit: datetime | None = None, inputs: Sequence[Path] = ()) -> datetime:
    """The creation time: ``explicit``, else ``SOURCE_DATE_EPOCH``, else the newest modification
    time of the input files (folders walked), else now; UTC, whole seconds.

    A package's sha256 is its identity, so its bytes must not depend on the build clock: the same
    model files and samples packaged again give the same package, and pushing it is a no-op.
    ``SOURCE_DATE_EPOCH`` is the reproducible-builds convention for pinning timestamps. Only a
    build from objects in memory, with no file among its inputs, falls back to the clock.
    """
    if explicit is not None:
        if explicit.tzinfo is None:
            raise InvalidInput("created_at must carry a time zone (e.g. datetime.now(UTC))")
        return explicit.astimezone(UTC).replace(microsecond=0)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            return datetime.fromtimestamp(int(epoch), UTC)
        except (ValueError, OverflowError, OSError):
            raise InvalidInput(f"SOURCE_DATE_EPOCH must be whole seconds since 1970, got {epoch!r}") from None
    newest = newest_modification(inputs)
    return newest if newest is not None else datetime.now(UTC).replace(microsecond=0)


def newest_modification(paths: Sequence[Path]) -> datetime | None:
    """The latest mtime among ``paths`` and the files under the folders among them; None if none exist."""
    times = [
        entry.stat().st_mtime
        for path in paths
        for entry in ([path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else [])
        if entry.is_file()
    ]
    return datetime.fromtimestamp(int(max(times)), UTC) if times else None


def default_creator() -> str:
    """The login name of the user building the package."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in some containers
        return "unknown"


def git_state(folder: Path | None) -> tuple[str | None, bool | None]:
    """The commit checked out in ``folder`` and whether tracked files differ from it.

    ``(None, None)`` outside a git checkout, without git, or with ``folder=None``.
    """
    if folder is None:
        return None, None
    commit = _git(folder, "rev-parse", "--verify", "HEAD")
    if commit is None:
        return None, None
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def data_file(path: Path) -> DataFile:
    """A data file's record: the path as given, its sha256 and size."""
    if not path.is_file():
        raise InvalidInput(f"data file {path} does not exist or is not a file")
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return DataFile(path=str(path), sha256=digest.hexdigest(), size=path.stat().st_size)
