"""PostgreSQL advisory locks that gateway processes on several hosts hold while they run.

A session-level advisory lock belongs to one server backend: PostgreSQL releases it when that
backend ends, however the client died. Gateway processes sharing a database use two kinds:

* :class:`PostgresLeadership`: the holder of one lock per ``name`` does the singleton work
  (the :class:`gateway.leadership.Leadership` protocol, across hosts);
* :class:`PostgresLiveness`: each process holds the lock of its work session, so any
  process can ask whether the owner of a pending push still runs
  (the :class:`gateway.registry.sessions.SessionLiveness` protocol, across hosts).

Each holds its locks on a dedicated connection (:class:`AdvisoryLocks`), never a pooled one, and
needs a direct connection to PostgreSQL ≥ 12 or a pooler in session mode: a transaction-mode
pooler (PgBouncer's default) hands the backend, and so the lock, to other clients.

Key space
---------
One database has one space of 64-bit advisory keys (pairs of 32-bit keys are another, unused).
mdeploy's keys are disjoint by construction, whatever the names:

* ``0x6D6465706C6F79``, positive: the migrations' transaction lock (``gateway.database.engine``);
* sign bit set, next bit 0, then 62 bits of sha256(name): the leadership of ``name``;
* sign bit set, next bit 1, then 62 bits of sha256(session id): a work session.

Two names of one kind share a key with probability 2**-62.

Losing a lock, and split brain
------------------------------
Every ``retry_s`` the holder asks the server which advisory locks its backend holds (and tries to
take those it wants and lacks), each query bounded by ``check_timeout_s``. A lock counts as held
for ``lease_s = retry_s + check_timeout_s`` after the query that last saw it was *sent*; a
closed connection (asyncpg's termination listener) or a failed check drops it at once. So a
holder stops relying on a lock at most ``lease_s`` (2 s by default) after the server last
confirmed it, however the loss happened, even if the network hangs without an error.

The server releases a lock only when the backend ends: at once for ``pg_terminate_backend``, a
restart or a client that closes; for a client that vanished (network cut, host down) when TCP
gives up. Each connection sets ``tcp_keepalives_*`` and ``tcp_user_timeout`` (Linux servers) so
that happens about ``keepalive_s + 3`` s (8 s by default) after the last packet from the client
and never sooner than ``keepalive_s`` (≥ 2 x ``lease_s``; 5 s). The holder's last confirmation
was sent no later than that packet, so its lease has run out before any other process can take
the lock: ``is_leader`` is never true in two processes at once, even with a blocked event loop
(the lease is read from the clock). What a lease cannot stop is a round of singleton work already
running when it runs out (the loops read ``is_leader`` before each round): such a round may
overlap a new leader's if it outlasts ``keepalive_s - lease_s`` (3 s by default). A new leader
follows within ``retry_s`` of the server releasing the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import time
from typing import Literal

import asyncpg
from sqlalchemy.engine import make_url

from core.errors import Conflict, Unavailable
from core.tasks import cancelled
from gateway.database.engine import postgres_url

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. a query sent as the server's FATAL goodbye arrives
)
Kind = Literal["leader", "session"]
_KIND_BIT: dict[Kind, int] = {"leader": 0, "session": 1 << 62}
_NAME_BITS = (1 << 62) - 1

# The advisory locks (bigint keys: objsubid 1) held by this connection's backend.
_HELD_HERE = """
SELECT (classid::bigint << 32) | objid::bigint AS key
FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND pid = pg_backend_pid()
"""
_TRY = "SELECT key FROM unnest($1::bigint[]) AS key WHERE pg_try_advisory_lock(key)"
# Held by any backend of this database (advisory locks are per database).
_HELD_ANYWHERE = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 1 AND granted
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND ((classid::bigint << 32) | objid::bigint) = $1
)
"""


def advisory_key(kind: Kind, name: str) -> int:
    """The advisory key of ``name`` of ``kind`` (module docstring): always negative."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") & _NAME_BITS
    return ((1 << 63) | _KIND_BIT[kind] | digest) - (1 << 64)  # as PostgreSQL's signed bigint


def asyncpg_dsn(url: str) -> str:
    """A ``postgresql://`` URL (any driver spelling) as asyncpg takes it; InvalidInput otherwise."""
    return make_url(postgres_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


class AdvisoryLocks:
    """Session-level advisory locks held on one dedicated connection, taken again after it drops.

    A background task keeps the connection: every ``retry_s`` it confirms the locks held and tries
    to take the wanted ones missing. After a lost connection it reconnects at once, then backs off
    (``retry_s`` doubling up to ``max_backoff_s``) while PostgreSQL stays unreachable.
    """

    def __init__(
        self,
        url: str,
        *,
        purpose: str,
        retry_s: float = 1.0,
        check_timeout_s: float = 1.0,
        connect_timeout_s: float = 5.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self.purpose = purpose
        self.retry_s = retry_s
        self.check_timeout_s = check_timeout_s
        self.lease_s = retry_s + check_timeout_s
        self.keepalive_s = max(5, math.ceil(2 * self.lease_s))
        """The server drops a silent client between this and this + 3 seconds (module docstring)."""
        self._connect_timeout_s = connect_timeout_s
        self._max_backoff_s = max_backoff_s
        self._wanted: set[int] = set()
        self._confirmed: dict[int, float] = {}  # key → monotonic time the confirming query was sent
        self._connection: asyncpg.Connection | None = None
        self._using = asyncio.Lock()  # one query at a time on the connection
        self._wake = asyncio.Event()  # the connection closed: reconnect now, not after retry_s
        self._first_round = asyncio.Event()
        self._backoff_s = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def want(self, key: int) -> None:
        """Hold ``key`` from the next round on (and after every reconnect)."""
        self._wanted.add(key)

    def holds(self, key: int) -> bool:
        """Whether this connection holds ``key``, as confirmed by the server within ``lease_s``."""
        confirmed = self._confirmed.get(key)
        connection = self._connection
        return (
            confirmed is not None
            and connection is not None
            and not connection.is_closed()
            and time.monotonic() - confirmed < self.lease_s
        )

    async def start(self) -> None:
        """Connect and try once (returns either way), then keep at it in the background."""
        if self._closed:
            raise Unavailable(f"{self.purpose}: closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"advisory locks: {self.purpose}")
        await self._first_round.wait()

    async def take(self, key: int) -> None:
        """Take ``key`` now and hold it from then on; Conflict if another backend holds it,
        Unavailable if PostgreSQL cannot be reached (then nothing changes)."""
        await self.start()
        try:
            async with self._using:
                connection = self._open_connection()
                sent = time.monotonic()
                taken = await connection.fetchval(
                    "SELECT pg_try_advisory_lock($1)", key, timeout=self.check_timeout_s
                )
        except _CONNECTION_ERRORS as error:
            self._wake.set()
            raise Unavailable(f"PostgreSQL is unreachable, cannot take an advisory lock: {error}") from error
        if not taken:
            raise Conflict(f"another process holds the advisory lock of {self.purpose} ({key})")
        self._wanted.add(key)
        self._confirmed[key] = sent

    async def held_anywhere(self, key: int) -> bool:
        """Whether some backend of this database (this one included) holds ``key``;
        Unavailable if PostgreSQL cannot be reached now (the answer is unknown, never "no")."""
        await self.start()
        try:
            async with self._using:
                connection = self._open_connection()
                return bool(await connection.fetchval(_HELD_ANYWHERE, key, timeout=self.check_timeout_s))
        except _CONNECTION_ERRORS as error:
            self._wake.set()
            raise Unavailable(
                f"PostgreSQL is unreachable, cannot read its advisory locks: {error}"
            ) from error

    async def close(self) -> None:
        """Stop, and release every lock before returning."""
        self._closed = True
        await cancelled(self._task)
        self._task = None
        connection, self._connection = self._connection, None
        self._confirmed.clear()
        if connection is None or connection.is_closed():
            return
        try:
            await connection.execute("SELECT pg_advisory_unlock_all()", timeout=self.check_timeout_s)
            await connection.close(timeout=self.check_timeout_s)
        except _CONNECTION_ERRORS:
            connection.terminate()  # the backend ends on the closed socket, releasing the locks

    def _open_connection(self) -> asyncpg.Connection:
        connection = self._connection
        if connection is None or connection.is_closed():
            raise ConnectionError("not connected (reconnecting)")
        return connection

    async def _run(self) -> None:
        try:
            while True:
                if self._backoff_s:
                    await asyncio.sleep(self._backoff_s)
                self._backoff_s = min(max(2 * self._backoff_s, self.retry_s), self._max_backoff_s)
                try:
                    connection = await asyncpg.connect(
                        self._dsn, timeout=self._connect_timeout_s, server_settings=self._server_settings()
                    )
                except Exception as error:  # the loop must outlive any failure to connect
                    log.warning("%s: cannot connect to PostgreSQL (%s)", self.purpose, error)
                    self._first_round.set()
                    continue
                # Cancelled (close()) is no Exception: the connection stays for close() to release.
                try:
                    await self._keep(connection)
                except Exception as error:  # a lost connection, however it failed
                    log.warning("%s: lost the PostgreSQL connection (%r); reconnecting", self.purpose, error)
                    self._lose(connection)
        finally:
            self._first_round.set()

    def _server_settings(self) -> dict[str, str]:
        # The server's side of the split-brain bound (module docstring); user-settable per session.
        return {
            "application_name": f"mdeploy {self.purpose}"[:63],
            "tcp_keepalives_idle": str(self.keepalive_s),
            "tcp_keepalives_interval": "1",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": str((self.keepalive_s + 3) * 1000),
        }

    async def _keep(self, connection: asyncpg.Connection) -> None:
        def terminated(closed: object) -> None:
            if closed is self._connection:
                self._confirmed.clear()  # not held from this moment: the backend is gone
                self._wake.set()

        self._wake.clear()
        self._connection = connection
        connection.add_termination_listener(terminated)
        while True:
            await self._round(connection)
            self._backoff_s = 0.0  # a healthy connection: the next loss reconnects at once
            self._first_round.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.retry_s)
            self._wake.clear()

    async def _round(self, connection: asyncpg.Connection) -> None:
        async with self._using:
            if connection.is_closed():
                raise ConnectionError("the connection closed")
            sent = time.monotonic()
            held = {
                row["key"]: sent for row in await connection.fetch(_HELD_HERE, timeout=self.check_timeout_s)
            }
            missing = self._wanted - held.keys()
            if missing:
                sent = time.monotonic()
                taken = await connection.fetch(_TRY, sorted(missing), timeout=self.check_timeout_s)
                held.update((row["key"], sent) for row in taken)
        for key in self._wanted:
            if key in held:
                if key not in self._confirmed:
                    log.info("process %d holds the advisory lock of %s", os.getpid(), self.purpose)
                self._confirmed[key] = held[key]
            elif self._confirmed.pop(key, None) is not None:
                log.warning("process %d lost the advisory lock of %s", os.getpid(), self.purpose)

    def _lose(self, connection: asyncpg.Connection) -> None:
        if self._confirmed:
            log.warning("process %d lost the advisory locks of %s", os.getpid(), self.purpose)
        self._confirmed.clear()
        if self._connection is connection:
            self._connection = None
        connection.terminate()


class PostgresLeadership:
    """The process holding the advisory lock of ``name`` leads, across hosts (module docstring).

    ``name`` says which singleton work: processes that manage other inference servers need a
    leader of their own (``gateway.leadership.backends_name``).
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        retry_s: float = 1.0,
        check_timeout_s: float = 1.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.key = advisory_key("leader", name)
        self._locks = AdvisoryLocks(
            url,
            purpose=f"leadership {name}",
            retry_s=retry_s,
            check_timeout_s=check_timeout_s,
            max_backoff_s=max_backoff_s,
        )
        self._locks.want(self.key)

    @property
    def is_leader(self) -> bool:
        return self._locks.holds(self.key)

    @property
    def lease_s(self) -> float:
        """At most this long after losing the lock (unseen) ``is_leader`` may still say True."""
        return self._locks.lease_s

    async def start(self) -> None:
        await self._locks.start()

    async def close(self) -> None:
        await self._locks.close()


class PostgresLiveness:
    """Work sessions of gateway processes on any host: each holds its session's advisory lock.

    Connects on first use (or :meth:`start`). While its connection is down (PostgreSQL restarting,
    the backend terminated) this process's sessions look dead to the others until it reconnects
    and takes their locks again, within ``retry_s`` of PostgreSQL answering.
    """

    def __init__(
        self, url: str, *, retry_s: float = 1.0, check_timeout_s: float = 1.0, max_backoff_s: float = 5.0
    ) -> None:
        self._locks = AdvisoryLocks(
            url,
            purpose="sessions",
            retry_s=retry_s,
            check_timeout_s=check_timeout_s,
            max_backoff_s=max_backoff_s,
        )

    async def start(self) -> None:
        await self._locks.start()

    async def hold(self, session_id: str) -> None:
        await self._locks.take(advisory_key("session", session_id))

    async def is_alive(self, session_id: str) -> bool:
        return await self._locks.held_anywhere(advisory_key("session", session_id))

    async def close(self) -> None:
        await self._locks.close()
