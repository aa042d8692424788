"""Changes committed by one gateway process, told at once to every other one, on any host.

A store that caches what is in the database (remembered API keys...) calls :func:`notify` in the
transaction that changes it; PostgreSQL delivers the notification to every listener when that
transaction commits, and not at all when it rolls back (``LISTEN``/``NOTIFY``). Each gateway
process listens through one :class:`PostgresNotifications`, on a dedicated connection of its own
(a pooled connection could not stay in ``LISTEN``), and calls its subscribers' callbacks on the
event loop, for changes made by any process, this one included.

A notification sent while the listening connection is down is lost. So a subscriber trusts its
cache only while :attr:`Notifications.connected` holds, and after every (re)connection each
callback gets :data:`RESYNC` (forget everything). A connection that the server closes is seen at
once; one that silently stops answering (a network partition) within ``check_s`` + ``timeout_s``
by a cheap query, which bounds how stale a cache can be.

On SQLite (one host) :func:`notify` does nothing and :class:`NoNotifications` delivers nothing:
the processes sharing a SQLite file see each other's changes through the data folder (change
markers, ``PRAGMA data_version``), as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gateway.database.engine import postgres_url

log = logging.getLogger(__name__)

RESYNC = "*"
"""The payload each callback gets after every (re)connection: notifications may have been missed."""

Callback = Callable[[str], None]

_FIRST_RETRY_S = 0.2
_MAX_RETRY_S = 5.0


def notify(connection: sa.Connection, channel: str, payload: str = "") -> None:
    """Tell ``channel``'s subscribers in every process, when the caller's transaction commits
    (PostgreSQL); nothing on SQLite."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
        )


class Notifications(Protocol):
    @property
    def connected(self) -> bool:
        """Whether notifications are being received now; while False, trust no cache."""
        ...

    def subscribe(self, channel: str, callback: Callback) -> None:
        """``callback(payload)`` on the event loop for each notification on ``channel`` (from any
        process), and ``callback(RESYNC)`` once the subscription is live and after every reconnection."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class NoNotifications:
    """SQLite's: always connected, nothing ever arrives (see the module doc)."""

    @property
    def connected(self) -> bool:
        return True

    def subscribe(self, channel: str, callback: Callback) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


class PostgresNotifications:
    """``LISTEN`` on one dedicated asyncpg connection, reconnected with backoff when lost.

    Only the task started by :meth:`start` uses the connection (asyncpg runs one command at a
    time): it listens to new channels, checks that the server still answers every ``check_s``,
    and reconnects after a loss, 0.2 s doubling to 5 s between tries.
    """

    def __init__(self, url: str, *, check_s: float = 2.0, timeout_s: float = 5.0) -> None:
        # asyncpg takes the plain postgresql:// form (postgres_url checks it, for SQLAlchemy's).
        self._url = (
            make_url(postgres_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        self._check_s = check_s
        self._timeout_s = timeout_s
        self._callbacks: dict[str, list[Callback]] = {}
        self._new: list[tuple[str, Callback]] = []  # subscribed while live, not yet listened to
        self._live: asyncpg.Connection | None = None  # listening to every channel but those in _new
        self._current: asyncpg.Connection | None = None  # the connection of _run, live or not yet
        self._connected = False
        self._wake = asyncio.Event()  # a new subscription, or the connection was lost
        self._tried = asyncio.Event()  # the first connection attempt is over
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._connected

    def subscribe(self, channel: str, callback: Callback) -> None:
        self._callbacks.setdefault(channel, []).append(callback)
        if self._live is not None:  # else it is listened to at the next connection
            self._new.append((channel, callback))
            self._set_live(self._live)
            self._wake.set()

    async def start(self) -> None:
        """Connect; returns after the first attempt (a failed one is retried in the background,
        ``connected`` False meanwhile)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="postgres-notifications")
        await self._tried.wait()

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set_live(None)
        connection, self._current = self._current, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=self._timeout_s)
            except Exception:  # closing anyway
                connection.terminate()

    def _set_live(self, connection: asyncpg.Connection | None) -> None:
        self._live = connection
        self._connected = connection is not None and not self._new

    async def _run(self) -> None:
        retry_s = _FIRST_RETRY_S
        while True:
            try:
                self._current = await asyncpg.connect(self._url, timeout=self._timeout_s)
                await self._listen(self._current)
                retry_s = _FIRST_RETRY_S
                self._tried.set()
                await self._watch(self._current)
            except Exception as error:  # whatever it was, the cure is a new connection
                log.warning(
                    "notifications from PostgreSQL stopped (%s: %s); reconnecting",
                    type(error).__name__,
                    error,
                )
            finally:
                self._set_live(None)
                self._tried.set()
                if not self._closing and self._current is not None:  # else close() ends it politely
                    self._current.terminate()
                    self._current = None
            await asyncio.sleep(retry_s)
            retry_s = min(2 * retry_s, _MAX_RETRY_S)

    async def _listen(self, connection: asyncpg.Connection) -> None:
        """LISTEN to every channel on a new connection, then RESYNC every subscriber."""
        connection.add_termination_listener(self._lost)
        listened: set[str] = set()
        while missing := [channel for channel in self._callbacks if channel not in listened]:
            for channel in missing:  # a subscription may come while this awaits: loop
                await connection.add_listener(channel, self._deliver)
                listened.add(channel)
        self._new.clear()
        self._set_live(connection)
        log.info("receiving notifications from PostgreSQL")
        for callbacks in list(self._callbacks.values()):
            for callback in list(callbacks):
                self._call(callback, RESYNC)

    async def _watch(self, connection: asyncpg.Connection) -> None:
        """Until the connection is lost: listen to new subscriptions, check that it answers."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._check_s)
            except TimeoutError:
                await connection.fetchval("SELECT 1", timeout=self._timeout_s)
                continue
            self._wake.clear()
            if connection.is_closed():
                raise ConnectionError("the server closed the connection")
            while self._new:
                new, self._new = self._new, []
                for channel in dict.fromkeys(channel for channel, _ in new):
                    await connection.add_listener(channel, self._deliver)
                for _, callback in new:
                    self._call(callback, RESYNC)
            if self._live is connection:  # not lost meanwhile
                self._set_live(connection)

    def _lost(self, connection: object) -> None:
        if self._live is connection:
            self._set_live(None)  # not connected from now on: notifications may be missed
        self._wake.set()

    def _deliver(self, connection: object, pid: int, channel: str, payload: object) -> None:
        for callback in list(self._callbacks.get(channel, ())):
            self._call(callback, str(payload))

    @staticmethod
    def _call(callback: Callback, payload: str) -> None:
        try:
            callback(payload)
        except Exception:  # one subscriber's failure must not keep the others uninformed
            log.exception("a notification subscriber failed")
