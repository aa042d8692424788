"""Which gateway process does the singleton work: the registry's reconcile loop and the cleanups.

Request handling runs in every process; some background work must run in one, because several
processes doing it at once would be wasteful or racy: loading and unloading models on the
inference servers (reconcile, and rolling back crashed pushes), auditing expired keys, sweeping
the feedback ledger. A :class:`Leadership` answers "is it this process?".

- :class:`SoleProcess`: the only process (``mdeploy serve`` without workers) always leads.
- :class:`FileLockLeadership`: processes on one host (``mdeploy serve --workers N``) take an
  exclusive ``flock`` on one file in the data folder. The kernel releases it when the holder
  dies, however it dies, and the others try again every ``retry_s``, so the work moves within
  about a second.
- ``gateway.database.advisory.PostgresLeadership``: processes on several hosts sharing one
  PostgreSQL hold a session-level advisory lock instead; PostgreSQL releases it when the holder's
  backend ends. Name it with :func:`backends_name`, as :func:`lock_path` names the file.

A process never gives the lead back while it runs (a PostgreSQL leader loses it with its
connection); a leader that is closed releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import Protocol

from core.tasks import cancelled
from gateway.backend_address import parse_backend
from gateway.database.advisory import PostgresLeadership
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

LOCK_FOLDER = "leader"
"""Under the data folder: one lock file per set of inference servers that processes manage."""


class Leadership(Protocol):
    @property
    def is_leader(self) -> bool:
        """Whether this process does the singleton work now (read before each round of it)."""
        ...

    async def start(self) -> None:
        """Try to lead, and keep trying in the background (on the running event loop)."""
        ...

    async def close(self) -> None:
        """Stop trying; release the lead if this process has it."""
        ...


class SoleProcess:
    """One gateway process on its own: it leads."""

    @property
    def is_leader(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class FileLockLeadership:
    """The process holding an exclusive ``flock`` on ``path`` leads (module docstring)."""

    def __init__(self, path: Path, *, retry_s: float = 1.0) -> None:
        self.path = path
        self._retry_s = retry_s
        self._fd: int | None = None
        self._leading = False
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not inheritable (Python's default): a child process holding a copy would keep the lock
        # after this process died.
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not self._try():
            self._task = asyncio.create_task(self._keep_trying(), name="leadership")

    async def close(self) -> None:
        await cancelled(self._task)
        if self._fd is not None:
            os.close(self._fd)  # releases the lock: another process takes it within retry_s
            self._fd = None
        self._leading = False

    def _try(self) -> bool:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._leading = True
        log.info("process %d leads: it runs the reconcile loop and the cleanups (%s)", os.getpid(), self.path)
        return True

    async def _keep_trying(self) -> None:
        while True:
            await asyncio.sleep(self._retry_s)
            with contextlib.suppress(OSError):
                if self._try():
                    return


def lock_path(data_dir: Path, backends: list[str]) -> Path:
    """The lock of the processes that manage ``backends`` (any order) from ``data_dir``.

    Processes on one data folder that reconcile other inference servers need a leader of
    their own: one that never talks to a server cannot keep its models loaded.
    """
    return data_dir / LOCK_FOLDER / f"{backends_name(backends)}.lock"


def backends_name(backends: list[str]) -> str:
    """The name of the leadership over ``backends`` (any order): a short digest.

    Every process competing for one lead must spell the addresses the same way; processes on
    several hosts whose addresses mean each host's own servers (127.0.0.1) manage different
    servers and need different names.
    """
    return hashlib.sha256("\n".join(sorted(backends)).encode()).hexdigest()[:16]


def default_leadership(settings: GatewaySettings) -> Leadership:
    """A gateway's leadership when its caller gives none: PostgreSQL's advisory lock when gateways
    share a database (on any host), else the sole process."""
    if settings.database_url is None:
        return SoleProcess()
    return PostgresLeadership(settings.database_url, host_scoped_name(settings.backends))


def host_scoped_name(backends: list[str]) -> str:
    """:func:`backends_name`, made this host's own when a backend is on loopback: each host's
    ``127.0.0.1:8001`` is another server, whose models only that host's leader keeps loaded."""
    if any(_is_loopback(address) for address in backends):
        return backends_name([*backends, f"host:{socket.gethostname()}"])
    return backends_name(backends)


def _is_loopback(address: str) -> bool:
    host = parse_backend(address).address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
