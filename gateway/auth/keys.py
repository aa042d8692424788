"""API keys: ``mdk_<id>_<secret>``, shown once, stored only as a hash, checked on every request.

The id is public (it names the key in lists, logs and rate-limit counters); the secret is 43
random base62 characters (~256 bits). The database keeps ``sha256(secret)``: a slow password
hash (bcrypt, argon2) defends guessable human passwords, but nobody can enumerate a 256-bit
secret, so a fast hash loses nothing and keeps verification at microseconds per request.

A looked-up key (record and secret digest; the secret is still compared, in constant time, on
every request) is remembered until a key changes, so a remembered key is verified without a
coroutine or a database query; only a key not remembered is looked up (awaited). How a change
reaches every gateway process sharing the database, so that a revocation takes effect at the
next request of each:

* **SQLite** (one host): every create and revoke rewrites a ``ChangeMarker`` beside the database
  file after its commit; each request reads the marker (a shared memory page, no system call).
  As a safety net for changes made to the file by other means, remembered keys are also dropped
  whenever SQLite's ``PRAGMA data_version`` or this connection's ``total_changes`` has moved,
  checked at most every ``_RECHECK_S`` (an in-memory database has no marker: checked on every
  request).
* **PostgreSQL** (several hosts): every create and revoke notifies ``mdeploy_keys`` in its
  transaction (``gateway.database.notifications``); each store forgets what it remembers on every
  notification, and remembers nothing while its notifications are not connected (each request is
  then looked up). A store given no notifications remembers nothing.

**The database unreachable** (PostgreSQL restarting, a network cut): a key is then checked
against the last answer the database gave for it in this process (its record and digest, kept
apart from the remembered keys and dropped when a notification names the key), so the clients
already served keep being served; a key never seen gets 503. No revocation can commit while the
database is down, so those answers are what the database would say, but for a revocation whose
notification was lost in the moment the connection broke. For ``_OUTAGE_S`` after a failed lookup
no other is tried (a hung network would make each request wait for its connect timeout).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
import string
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel

from core.errors import InvalidInput, NotFound, Unauthenticated, Unavailable
from gateway.auth.change_marker import ChangeMarker
from gateway.auth.ratelimit import parse_rate_limit
from gateway.auth.scopes import KeyScope, parse_scopes
from gateway.database.engine import Database, SQLiteDatabase, open_gateway_database
from gateway.database.notifications import RESYNC, Notifications, notify
from gateway.database.schema import api_keys
from gateway.database.statements import insert_missing
from gateway.db import open_database
from gateway.registry import audit
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

PREFIX = "mdk"
_ID_BYTES = 8
_SECRET_LENGTH = 43
_BASE62 = string.ascii_letters + string.digits
_KEY_FORMAT = re.compile(rf"^{PREFIX}_([0-9a-f]{{{2 * _ID_BYTES}}})_([A-Za-z0-9]{{{_SECRET_LENGTH}}})$")
_MAX_NAME = 200
_MAX_MODELS = 1000
_RECHECK_S = 1.0
_MAX_REMEMBERED = 10_000  # verified keys kept; past it the memory starts again (a key costs one SELECT)
_OUTAGE_S = 1.0
_LOOKUP_TIMEOUT_S = 5.0  # a network that hangs must not hold requests for long

CHANNEL = "mdeploy_keys"
"""Notified (PostgreSQL) with the key's id by every create and revoke."""

T = TypeVar("T")

KeyStatus = Literal["active", "expired", "revoked"]

_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.scopes,
    api_keys.c.models,
    api_keys.c.rate_limit,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
)
Remembered = tuple["KeyRecord | None", "bytes | None"]
"""A key id's record and secret digest; (None, None) for an unknown id."""


@dataclass(frozen=True)
class KeyRecord:
    """What the gateway knows about a key (never its secret)."""

    id: str
    name: str
    scopes: frozenset[KeyScope]
    models: tuple[str, ...] | None
    rate_limit: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def has_scope(self, scope: KeyScope) -> bool:
        return scope in self.scopes

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def status(self, now: datetime) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def info(self, now: datetime) -> KeyInfo:
        return KeyInfo(
            id=self.id,
            name=self.name,
            scopes=sorted(self.scopes),
            models=list(self.models) if self.models is not None else None,
            rate_limit=self.rate_limit,
            created_at=self.created_at,
            expires_at=self.expires_at,
            revoked_at=self.revoked_at,
            status=self.status(now),
        )


class KeyInfo(BaseModel):
    """An API key as the admin API shows it (never its secret)."""

    id: str
    name: str
    scopes: list[KeyScope]
    models: list[str] | None
    """The models it may use; null: every model."""
    rate_limit: str | None
    """Its own limit (e.g. 100/minute); null: its scopes' defaults."""
    created_at: AwareDatetime
    expires_at: AwareDatetime | None
    revoked_at: AwareDatetime | None
    status: KeyStatus


class CreatedKeyInfo(KeyInfo):
    """A new key, with the full key string: shown in this answer only."""

    key: str


@dataclass(frozen=True)
class CreatedKey:
    """A new key: its record and the full key string, which exists nowhere else after this."""

    record: KeyRecord
    key: str


class KeyStore:
    """API keys in the gateway database (SQLite or PostgreSQL); see the module doc."""

    def __init__(
        self,
        database: Database,
        notifications: Notifications | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = database
        self._clock = clock
        # key id → (record, secret digest), or (None, None) for an unknown id.
        self._verified: dict[str, Remembered] = {}
        # Moves whenever remembered keys are dropped: a lookup begun before is not remembered.
        self._generation = 0
        # The database's last answer for each valid key, for while it cannot be reached.
        self._last_known: dict[str, Remembered] = {}
        self._unreachable_until = 0.0
        self._sqlite: sqlite3.Connection | None = None
        self._marker: ChangeMarker | None = None
        self._notifications: Notifications | None = None
        if isinstance(database, SQLiteDatabase):
            self._sqlite = database.connection
            self._marker = _marker_beside(database.connection)
            self._seen_marker = b""
            self._verified_stamp: tuple[int, int] = (-1, -1)
            self._next_recheck = 0.0
            self._stamp_cursor = database.connection.cursor()
            self._stamp_cursor.row_factory = None  # one int: no sqlite3.Row to build
        elif notifications is not None:
            self._notifications = notifications
            notifications.subscribe(CHANNEL, self._notified)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def create(
        self,
        scopes: Iterable[str],
        *,
        models: Iterable[str] | None = None,
        rate_limit: str | None = None,
        expires_at: datetime | None = None,
        name: str = "",
        actor: str = "gateway",
    ) -> CreatedKey:
        """Create a key (audited: its id, scopes and models, never the secret); raises InvalidInput
        saying what to fix."""
        secret = "".join(secrets.choice(_BASE62) for _ in range(_SECRET_LENGTH))
        record = KeyRecord(
            id=secrets.token_hex(_ID_BYTES),
            name=_check_name(name),
            scopes=parse_scopes(scopes),
            models=_check_models(models),
            rate_limit=_check_rate_limit(rate_limit),
            created_at=self.now(),
            expires_at=self._check_expiry(expires_at),
            revoked_at=None,
        )
        await self._db.run(_add, record, _digest(secret), actor, False)
        self._changed()
        return CreatedKey(record, f"{PREFIX}_{record.id}_{secret}")

    async def register(
        self, key: str, scopes: Iterable[str], *, name: str = "", actor: str = "gateway"
    ) -> KeyRecord:
        """Make ``key``, made outside the gateway (an operator's secret), a key of this store, unless
        its hash is stored already (then its record is returned as it is: a revoked key stays
        revoked). InvalidInput when it is malformed or its id belongs to another key. Several
        processes may register the same key at once: one adds it, the others find it."""
        match = _KEY_FORMAT.match(key.strip())
        if match is None:
            raise InvalidInput(
                f"malformed API key; expected {PREFIX}_<16 hex digits>_<{_SECRET_LENGTH} letters or digits>"
                f" ({len(key.strip())} characters given)"
            )
        key_id, digest = match[1], _digest(match[2])
        record = KeyRecord(
            id=key_id,
            name=_check_name(name),
            scopes=parse_scopes(scopes),
            models=None,
            rate_limit=None,
            created_at=self.now(),
            expires_at=None,
            revoked_at=None,
        )

        def work(connection: sa.Connection) -> tuple[Remembered, bool]:
            if _add(connection, record, digest, actor, True):
                return (record, digest), True
            return _look_up(connection, key_id), False

        (stored, stored_digest), added = await self._db.run(work)
        if added:
            self._changed()
        if stored is None or stored_digest is None or not hmac.compare_digest(stored_digest, digest):
            raise InvalidInput(f"API key id {key_id} belongs to another key; make a new key")
        return stored

    async def list(self) -> list[KeyRecord]:
        query = sa.select(*_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
        rows = await self._db.read(lambda connection: connection.execute(query).mappings().all())
        return [_record(row) for row in rows]

    async def get(self, key_id: str) -> KeyRecord:
        return await self._db.read(_get, key_id)

    async def revoke(self, key_id: str, actor: str = "gateway") -> KeyRecord:
        """Revoke a key at once (audited); revoking a revoked key changes nothing."""
        revoked_at = self._clock()

        def work(connection: sa.Connection) -> tuple[KeyRecord, bool]:
            revoked = connection.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=revoked_at)
            ).rowcount
            record = _get(connection, key_id)
            if revoked:
                _audit(connection, actor, "key-revoke", record, "active", "revoked")
                notify(connection, CHANNEL, key_id)
            return record, bool(revoked)

        record, revoked = await self._db.run(work)
        self._last_known.pop(key_id, None)
        if revoked:
            self._changed()
        return record

    async def audit_expiries(self) -> int:
        """Write an audit event for each key that has expired since the last call; how many."""
        return await self._db.run(_audit_expiries, self._clock())

    async def audit_expiries_every(self, seconds: float, when: Callable[[], bool] | None = None) -> None:
        """Run :meth:`audit_expiries` every ``seconds`` until cancelled; only in rounds where
        ``when()`` holds, if given (of several processes, the leader: ``gateway.leadership``)."""
        while True:
            try:
                if when is None or when():
                    await self.audit_expiries()
            except (sa.exc.SQLAlchemyError, OSError) as error:
                log.warning("key expiries not audited yet (%s); retrying", error)
            await asyncio.sleep(seconds)

    def verify(self, presented: str | None) -> KeyRecord | Awaitable[KeyRecord]:
        """The record of a valid key, at once when it is remembered, else an awaitable of it (a
        database lookup); raises Unauthenticated saying what is wrong with it (a bad key that had
        to be looked up raises when awaited), Unavailable when the database cannot be reached."""
        key_id, secret = _split(presented)
        remembered = self._verified.get(key_id) if self._trusted() else None
        if remembered is None:
            return self._look_up_and_check(key_id, secret)
        return self._check(key_id, secret, remembered)

    async def _look_up_and_check(self, key_id: str, secret: str) -> KeyRecord:
        if time.monotonic() < self._unreachable_until:
            return self._check(key_id, secret, self._known_while_unreachable(key_id))
        generation = self._generation
        try:
            remembered = await asyncio.wait_for(self._db.read(_look_up, key_id), _LOOKUP_TIMEOUT_S)
        except (sa.exc.SQLAlchemyError, OSError, TimeoutError) as error:
            log.warning("API key %s looked up in memory: the database is unreachable (%s)", key_id, error)
            self._unreachable_until = time.monotonic() + _OUTAGE_S
            return self._check(key_id, secret, self._known_while_unreachable(key_id))
        if remembered[0] is not None and self._sqlite is None:  # SQLite is never "unreachable"
            if len(self._last_known) >= _MAX_REMEMBERED:
                self._last_known.clear()
            self._last_known[key_id] = remembered
        if self._trusted() and generation == self._generation:  # nothing changed while it looked
            if len(self._verified) >= _MAX_REMEMBERED:
                self._forget()
            self._verified[key_id] = remembered
        return self._check(key_id, secret, remembered)

    def _known_while_unreachable(self, key_id: str) -> Remembered:
        known = self._last_known.get(key_id)
        if known is None:  # a 503 the client may retry, not a 500
            raise Unavailable("cannot check the API key now (the gateway database is unreachable); retry")
        return known

    def _check(self, key_id: str, secret: str, remembered: Remembered) -> KeyRecord:
        record, stored_digest = remembered
        # A wrong secret reads like an unknown id, so nobody learns which ids exist.
        if stored_digest is None or not hmac.compare_digest(stored_digest, _digest(secret)):
            raise Unauthenticated(f"unknown API key {PREFIX}_{key_id}_...; check the key or create a new one")
        assert record is not None
        if record.revoked_at is not None:
            raise Unauthenticated(f"API key {record.id} was revoked at {_iso(record.revoked_at)}")
        if record.expires_at is not None and record.expires_at <= self.now():
            raise Unauthenticated(f"API key {record.id} expired at {_iso(record.expires_at)}")
        return record

    def remembers(self, presented: str | None) -> bool:
        """Whether ``presented`` is a valid key this process has verified and still remembers:
        answered from memory, never from the database (the check for floods of bad keys)."""
        try:
            key_id, secret = _split(presented)
        except Unauthenticated:
            return False
        if self._notifications is not None and not self._notifications.connected:
            return False
        remembered = self._verified.get(key_id)
        if remembered is None or remembered[1] is None:
            return False
        return hmac.compare_digest(remembered[1], _digest(secret))

    def close(self) -> None:
        if self._marker is not None:
            self._marker.close()

    def _changed(self) -> None:
        """After this process's commit of a change: tell every process's KeyStore on this host (this
        one too; PostgreSQL's notification tells those elsewhere) that remembered keys may be stale."""
        if self._marker is not None:
            self._marker.bump()
        self._forget()

    def _notified(self, payload: str) -> None:
        self._forget()  # a key changed (or RESYNC): key changes are rare, start again
        self._last_known.pop(payload, None)
        if payload == RESYNC:  # the listener (re)connected: PostgreSQL answers again
            self._unreachable_until = 0.0

    def _forget(self) -> None:
        self._verified.clear()
        self._generation += 1

    def _trusted(self) -> bool:
        """Whether remembered keys hold now (dropping them when they may not)."""
        if self._sqlite is not None:
            self._forget_if_changed(self._sqlite)
            return True
        if self._notifications is not None and self._notifications.connected:
            return True
        if self._verified:
            self._forget()
        return False

    def _forget_if_changed(self, connection: sqlite3.Connection) -> None:
        if self._marker is not None:
            marker = self._marker.read()
            if marker != self._seen_marker:
                self._seen_marker = marker
                self._forget()
            now = time.monotonic()
            if now < self._next_recheck:
                return
            self._next_recheck = now + _RECHECK_S
        version = self._stamp_cursor.execute("PRAGMA data_version").fetchone()[0]
        stamp = int(version), connection.total_changes
        if stamp != self._verified_stamp:
            self._verified_stamp = stamp
            self._forget()

    def _check_expiry(self, expires_at: datetime | None) -> datetime | None:
        if expires_at is None:
            return None
        if expires_at.tzinfo is None:
            raise InvalidInput(f"expiry {expires_at.isoformat()} has no time zone; give one (e.g. Z)")
        if expires_at <= self.now():
            raise InvalidInput(
                f"expiry {_iso(expires_at)} is in the past;"
                " give a future date (YYYY-MM-DD) or a duration (30d)"
            )
        return expires_at.astimezone(UTC).replace(microsecond=0)


def with_keys(settings: GatewaySettings, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    """``work(keys)`` on the key store of ``settings``' gateway database (PostgreSQL at
    ``database_url``, else the data folder's SQLite file), opened for it and closed after, in an
    event loop of its own: for code that runs where no loop runs (the CLI, ``mdeploy serve``
    before its gateway starts, scripts). Nothing is remembered between calls."""

    async def run() -> T:
        database = await open_gateway_database(
            settings.database_url, lambda: open_database(settings.database_path)
        )
        keys = KeyStore(database)
        try:
            return await work(keys)
        finally:
            keys.close()
            await database.close()
            if isinstance(database, SQLiteDatabase):
                database.connection.close()

    return asyncio.run(run())


# ---- statements, run in the caller's transaction ----


def _add(connection: sa.Connection, record: KeyRecord, digest: bytes, actor: str, if_missing: bool) -> bool:
    """Insert the key with its audit event and notification; with ``if_missing``, only if its id is
    not stored (then False, and nothing is written)."""
    row = {
        "id": record.id,
        "secret_sha256": digest,
        "name": record.name,
        "scopes": json.dumps(sorted(record.scopes)),
        "models": json.dumps(record.models) if record.models is not None else None,
        "rate_limit": record.rate_limit,
        "created_at": record.created_at.timestamp(),
        "expires_at": record.expires_at.timestamp() if record.expires_at else None,
        "revoked_at": None,
    }
    if if_missing:
        if connection.execute(insert_missing(connection, api_keys, row, ["id"])).rowcount != 1:
            return False
    else:
        connection.execute(sa.insert(api_keys).values(**row))
    _audit(connection, actor, "key-create", record, None, "active")
    notify(connection, CHANNEL, record.id)
    return True


def _look_up(connection: sa.Connection, key_id: str) -> Remembered:
    query = sa.select(*_COLUMNS, api_keys.c.secret_sha256).where(api_keys.c.id == key_id)
    row = connection.execute(query).mappings().first()
    if row is None:
        return None, None
    return _record(row), bytes(row["secret_sha256"])


def _get(connection: sa.Connection, key_id: str) -> KeyRecord:
    row = connection.execute(sa.select(*_COLUMNS).where(api_keys.c.id == key_id)).mappings().first()
    if row is None:
        raise NotFound(f"no API key with id {key_id!r}")
    return _record(row)


def _audit_expiries(connection: sa.Connection, now: float) -> int:
    rows = (
        connection.execute(
            sa.select(*_COLUMNS).where(
                api_keys.c.expiry_audited == 0,
                api_keys.c.revoked_at.is_(None),
                api_keys.c.expires_at.is_not(None),
                api_keys.c.expires_at <= now,
            )
        )
        .mappings()
        .all()
    )
    audited = 0
    for row in rows:
        # Conditional: of processes auditing at once, one writes each event.
        marked = connection.execute(
            sa.update(api_keys)
            .where(api_keys.c.id == row["id"], api_keys.c.expiry_audited == 0)
            .values(expiry_audited=1)
        ).rowcount
        if marked:
            _audit(connection, "gateway (expiry)", "key-expire", _record(row), "active", "expired")
            audited += 1
    return audited


def _audit(
    connection: sa.Connection, actor: str, action: str, record: KeyRecord, before: str | None, after: str
) -> None:
    """The key's id, name, scopes and models; never its secret or the secret's digest."""
    details = {
        "key_id": record.id,
        "name": record.name,
        "scopes": sorted(record.scopes),
        "models": record.models,
        "expires_at": _iso(record.expires_at) if record.expires_at else None,
    }
    event = audit.AuditEvent(actor=actor, action=action, from_value=before, to_value=after, details=details)
    audit.append(connection, event)


def parse_expiry(text: str, now: datetime) -> datetime:
    """``2027-01-01`` (midnight UTC), an ISO 8601 date-time, or a duration from now: 12h, 30d, 2w."""
    text = text.strip()
    if duration := re.fullmatch(r"(\d{1,5})([hdw])", text):
        count, unit = int(duration[1]), duration[2]
        return now + timedelta(hours=count * {"h": 1, "d": 24, "w": 24 * 7}[unit])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"expiry {text!r} is neither a date (2027-01-01), a date-time (2027-01-01T12:00:00Z)"
            " nor a duration (12h, 30d, 2w)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _split(presented: str | None) -> tuple[str, str]:
    if not presented:
        raise Unauthenticated("missing API key; send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    match = _KEY_FORMAT.match(presented)
    if match is None:
        raise Unauthenticated(
            f"malformed API key; expected {PREFIX}_<16 hex digits>_<{_SECRET_LENGTH} letters or digits>"
            " as printed by 'mdeploy keys create'"
        )
    return match[1], match[2]


def _marker_beside(connection: sqlite3.Connection) -> ChangeMarker | None:
    """The marker of the connection's database file; None for an in-memory database."""
    main = next(row for row in connection.execute("PRAGMA database_list") if row[1] == "main")
    return ChangeMarker(Path(f"{main[2]}-keys")) if main[2] else None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _record(row: sa.RowMapping) -> KeyRecord:
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        scopes=frozenset(KeyScope(s) for s in json.loads(row["scopes"])),
        models=tuple(json.loads(row["models"])) if row["models"] is not None else None,
        rate_limit=row["rate_limit"],
        created_at=_datetime(row["created_at"]),
        expires_at=_maybe_datetime(row["expires_at"]),
        revoked_at=_maybe_datetime(row["revoked_at"]),
    )


def _check_name(name: str) -> str:
    name = name.strip()
    if len(name) > _MAX_NAME or not name.isprintable():
        raise InvalidInput(f"key name must be printable text of at most {_MAX_NAME} characters")
    return name


def _check_models(models: Iterable[str] | None) -> tuple[str, ...] | None:
    if models is None:
        return None
    names = tuple(dict.fromkeys(model.strip() for model in models))
    if not names:
        raise InvalidInput("the models list is empty, so the key could call no model; omit it to allow all")
    if len(names) > _MAX_MODELS or any(not name or "," in name or not name.isprintable() for name in names):
        raise InvalidInput(f"models must be at most {_MAX_MODELS} non-empty model names without commas")
    return names


def _check_rate_limit(rate_limit: str | None) -> str | None:
    if rate_limit is None:
        return None
    parse_rate_limit(rate_limit)
    return " ".join(rate_limit.split())


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _maybe_datetime(seconds: float | None) -> datetime | None:
    return _datetime(seconds) if seconds is not None else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None
