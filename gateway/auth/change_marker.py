"""A 16-byte file beside the database that every key write rewrites, read through a shared mmap.

Reading it costs no system call (a page shared by every process that maps it), where asking
SQLite whether anything changed (``PRAGMA data_version``) opens a read transaction with file
locks on every request. Writers put 16 new random bytes there after their commit; a reader
that sees other bytes than last time knows its remembered keys may be stale.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

SIZE = 16


class ChangeMarker:
    def __init__(self, path: Path) -> None:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(descriptor).st_size < SIZE:
                os.pwrite(descriptor, os.urandom(SIZE), 0)
            self._map = mmap.mmap(descriptor, SIZE)
        finally:
            os.close(descriptor)  # the mapping keeps the file

    def read(self) -> bytes:
        return self._map[:SIZE]

    def bump(self) -> None:
        """Say "changed" to every reader (call after the change is committed)."""
        self._map[:SIZE] = os.urandom(SIZE)

    def close(self) -> None:
        self._map.close()
