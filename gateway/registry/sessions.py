"""Work sessions: which gateway process owns an upload or a push in progress.

Several gateway processes share the data folder. Each holds an exclusive ``flock`` on its
own lock file ``<work>/<id>.lock`` for as long as it runs; the kernel drops the lock when the
process dies, however it dies. So "is session X alive?" is "can I not lock X's file?", and
leftovers of dead sessions (their folder of uploads and staged files, their pending rows)
can be cleaned without ever touching the work of a live one.

Processes on several hosts share the database but not the lock files: whether the owner of a
pending row runs is then a question for PostgreSQL (``gateway.database.advisory``'s
``PostgresLiveness``). :class:`SessionLiveness` is the one interface to both; :class:`LocalLiveness`
asks the lock files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.errors import Internal

_LOCK_SUFFIX = ".lock"


@dataclass
class Session:
    """This process's session: a locked id and a folder for its uploads and staging."""

    id: str
    folder: Path
    _lock_fd: int

    @classmethod
    def start(cls, work_dir: Path) -> Session:
        work_dir.mkdir(parents=True, exist_ok=True)
        while True:
            session_id = uuid.uuid4().hex
            fd = _claim(work_dir / f"{session_id}{_LOCK_SUFFIX}")
            if fd is not None:
                folder = work_dir / session_id
                folder.mkdir()
                return cls(session_id, folder, fd)

    def new_file(self, suffix: str) -> Path:
        """A fresh path in this session's folder (removed with the session if left behind)."""
        return self.folder / f"{uuid.uuid4().hex}{suffix}"

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.folder.parent / f"{self.id}{_LOCK_SUFFIX}").unlink()
        os.close(self._lock_fd)


def _claim(path: Path) -> int | None:
    """Create and lock ``path``; None if a sweeper got in between (then try another id)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if os.fstat(fd).st_nlink == 0:  # a sweeper took it for dead and unlinked it first
        os.close(fd)
        return None
    return fd


def is_alive(work_dir: Path, session_id: str) -> bool:
    """Whether the process that owns ``session_id`` still runs."""
    path = work_dir / f"{session_id}{_LOCK_SUFFIX}"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_dead(work_dir: Path) -> list[str]:
    """Remove the folders and lock files of dead sessions; return their ids."""
    removed = []
    for lock in sorted(work_dir.glob(f"*{_LOCK_SUFFIX}")):
        session_id = lock.name.removesuffix(_LOCK_SUFFIX)
        if _remove_if_dead(lock, work_dir / session_id):
            removed.append(session_id)
    for folder in work_dir.iterdir():
        # A folder without a lock file lost its session half-way through a removal.
        if folder.is_dir() and not (work_dir / f"{folder.name}{_LOCK_SUFFIX}").exists():
            shutil.rmtree(folder, ignore_errors=True)
    return removed


def _remove_if_dead(lock: Path, folder: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        # Holding the dead session's lock: nobody else cleans it meanwhile.
        shutil.rmtree(folder, ignore_errors=True)
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
    return True


class SessionLiveness(Protocol):
    """Which sessions' processes still run, wherever they run."""

    async def hold(self, session_id: str) -> None:
        """Mark this process's session alive for as long as the process runs (until close)."""
        ...

    async def is_alive(self, session_id: str) -> bool:
        """Whether the process that holds ``session_id`` runs (this process included).

        Raises ``core.errors.Unavailable`` when that cannot be known now: never a false "dead".
        """
        ...

    async def close(self) -> None:
        """Release this process's sessions."""
        ...


class LocalLiveness:
    """The sessions of processes on one host: the ``flock`` of :meth:`Session.start` on ``work_dir``."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir

    async def hold(self, session_id: str) -> None:
        # Session.start already holds the lock; another open file of it could not take it again.
        if not is_alive(self.work_dir, session_id):
            raise Internal(f"session {session_id} was not started in {self.work_dir} (Session.start)")

    async def is_alive(self, session_id: str) -> bool:
        return is_alive(self.work_dir, session_id)

    async def close(self) -> None:
        return None  # Session.close releases the lock
