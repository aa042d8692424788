"""API keys: ``mdk_<id>_<secret>``, shown once, stored only as a hash, checked on every request.

The id is public (it names the key in lists, logs and rate-limit counters); the secret is 43
random base62 characters (~256 bits). The database keeps ``sha256(secret)``: a slow password
hash (bcrypt, argon2) defends guessable human passwords, but nobody can enumerate a 256-bit
secret, so a fast hash loses nothing and keeps verification at microseconds per request.

A looked-up key (record and secret digest; the secret is still compared, in constant time, on
every request) is remembered until a key changes. Every create and revoke, in any process,
rewrites a ``ChangeMarker`` beside the database after its commit; each request reads the
marker (a shared memory page, no system call), so a revocation takes effect at the next
request of every gateway process that shares the database. As a safety net for changes made
to the database by other means, remembered keys are also dropped whenever SQLite's
``PRAGMA data_version`` or this connection's ``total_changes`` has moved, checked at most every
``_RECHECK_S`` (an in-memory database has no marker: it is checked on every request).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel

from core.errors import InvalidInput, NotFound, Unauthenticated
from gateway.auth.change_marker import ChangeMarker
from gateway.auth.ratelimit import parse_rate_limit
from gateway.auth.scopes import KeyScope, parse_scopes
from gateway.db import ensure_columns, ensure_schema, transaction
from gateway.registry import audit

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

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,          -- JSON array of scope names
    models TEXT,                   -- JSON array of model names; NULL: every model
    rate_limit TEXT,               -- e.g. '100/minute'; NULL: the scope's default
    created_at REAL NOT NULL,      -- seconds since the epoch
    expires_at REAL,
    revoked_at REAL,
    expiry_audited INTEGER NOT NULL DEFAULT 0  -- 1 once its expiry is in the audit log
) STRICT;
"""
ADDED_COLUMNS = {"expiry_audited": "INTEGER NOT NULL DEFAULT 0"}

KeyStatus = Literal["active", "expired", "revoked"]

_COLUMNS = "id, name, scopes, models, rate_limit, created_at, expires_at, revoked_at"


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
    """API keys in the gateway's SQLite database."""

    def __init__(self, connection: sqlite3.Connection, *, clock: Callable[[], float] = time.time) -> None:
        ensure_schema(connection, SCHEMA)
        ensure_columns(connection, "api_keys", ADDED_COLUMNS)
        ensure_schema(connection, audit.SCHEMA)
        self._db = connection
        self._clock = clock
        # key id → (record, secret digest), or (None, None) for an unknown id; valid for one stamp.
        self._verified: dict[str, tuple[KeyRecord | None, bytes | None]] = {}
        self._marker = _marker_beside(connection)
        self._seen_marker = b""
        self._verified_stamp: tuple[int, int] = (-1, -1)
        self._next_recheck = 0.0
        self._stamp_cursor = connection.cursor()
        self._stamp_cursor.row_factory = None  # one int: no sqlite3.Row to build

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def create(
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
        return self._add(
            secrets.token_hex(_ID_BYTES),
            secret,
            scopes,
            models=models,
            rate_limit=rate_limit,
            expires_at=expires_at,
            name=name,
            actor=actor,
        )

    def register(
        self, key: str, scopes: Iterable[str], *, name: str = "", actor: str = "gateway"
    ) -> KeyRecord:
        """Make ``key``, made outside the gateway (an operator's secret), a key of this store, unless
        its hash is stored already (then its record is returned as it is: a revoked key stays
        revoked). InvalidInput when it is malformed or its id belongs to another key."""
        match = _KEY_FORMAT.match(key.strip())
        if match is None:
            raise InvalidInput(
                f"malformed API key; expected {PREFIX}_<16 hex digits>_<{_SECRET_LENGTH} letters or digits>"
                f" ({len(key.strip())} characters given)"
            )
        key_id, secret = match[1], match[2]
        if self._look_up(key_id)[1] is None:
            with contextlib.suppress(sqlite3.IntegrityError):  # another process registered it first
                return self._add(key_id, secret, scopes, name=name, actor=actor).record
        record, digest = self._look_up(key_id)
        if record is None or digest is None or not hmac.compare_digest(digest, _digest(secret)):
            raise InvalidInput(f"API key id {key_id} belongs to another key; make a new key")
        return record

    def _add(
        self,
        key_id: str,
        secret: str,
        scopes: Iterable[str],
        *,
        models: Iterable[str] | None = None,
        rate_limit: str | None = None,
        expires_at: datetime | None = None,
        name: str,
        actor: str,
    ) -> CreatedKey:
        record = KeyRecord(
            id=key_id,
            name=_check_name(name),
            scopes=parse_scopes(scopes),
            models=_check_models(models),
            rate_limit=_check_rate_limit(rate_limit),
            created_at=self.now(),
            expires_at=self._check_expiry(expires_at),
            revoked_at=None,
        )
        with self._transaction():
            self._insert(record, _digest(secret))
            self._audit(actor, "key-create", record, None, "active")
        self._changed()
        return CreatedKey(record, f"{PREFIX}_{record.id}_{secret}")

    def list(self) -> list[KeyRecord]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id").fetchall()
        return [_record(row) for row in rows]

    def get(self, key_id: str) -> KeyRecord:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}")
        return _record(row)

    def revoke(self, key_id: str, actor: str = "gateway") -> KeyRecord:
        """Revoke a key at once (audited); revoking a revoked key changes nothing."""
        with self._transaction():
            revoked = self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (self._clock(), key_id),
            ).rowcount
            if revoked:
                self._audit(actor, "key-revoke", self.get(key_id), "active", "revoked")
        self._changed()
        return self.get(key_id)

    def audit_expiries(self) -> int:
        """Write an audit event for each key that has expired since the last call; how many."""
        with self._transaction():
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE expiry_audited = 0 AND revoked_at IS NULL"
                " AND expires_at IS NOT NULL AND expires_at <= ?",
                (self._clock(),),
            ).fetchall()
            for row in rows:
                self._db.execute("UPDATE api_keys SET expiry_audited = 1 WHERE id = ?", (row["id"],))
                self._audit("gateway (expiry)", "key-expire", _record(row), "active", "expired")
        return len(rows)

    async def audit_expiries_every(self, seconds: float, when: Callable[[], bool] | None = None) -> None:
        """Run :meth:`audit_expiries` every ``seconds`` until cancelled; only in rounds where
        ``when()`` holds, if given (of several processes, the leader: ``gateway.leadership``)."""
        while True:
            try:
                if when is None or when():
                    self.audit_expiries()
            except sqlite3.Error as error:
                log.warning("key expiries not audited yet (%s); retrying", error)
            await asyncio.sleep(seconds)

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db)

    def _audit(self, actor: str, action: str, record: KeyRecord, before: str | None, after: str) -> None:
        """The key's id, name, scopes and models; never its secret or the secret's digest."""
        details = {
            "key_id": record.id,
            "name": record.name,
            "scopes": sorted(record.scopes),
            "models": record.models,
            "expires_at": _iso(record.expires_at) if record.expires_at else None,
        }
        event = audit.AuditEvent(
            actor=actor, action=action, from_value=before, to_value=after, details=details
        )
        audit.append(self._db, event)

    def verify(self, presented: str | None) -> KeyRecord:
        """The record of a valid key; raises Unauthenticated saying what is wrong with it."""
        key_id, secret = _split(presented)
        self._forget_if_changed()
        remembered = self._verified.get(key_id)
        if remembered is None:
            remembered = self._look_up(key_id)
            if len(self._verified) >= _MAX_REMEMBERED:
                self._verified.clear()
            self._verified[key_id] = remembered
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
        remembered = self._verified.get(key_id)
        if remembered is None or remembered[1] is None:
            return False
        return hmac.compare_digest(remembered[1], _digest(secret))

    def close(self) -> None:
        if self._marker is not None:
            self._marker.close()

    def _changed(self) -> None:
        """Tell every process's KeyStore (this one too) that remembered keys may be stale."""
        if self._marker is not None:
            self._marker.bump()
        self._verified.clear()

    def _forget_if_changed(self) -> None:
        if self._marker is not None:
            marker = self._marker.read()
            if marker != self._seen_marker:
                self._seen_marker = marker
                self._verified.clear()
            now = time.monotonic()
            if now < self._next_recheck:
                return
            self._next_recheck = now + _RECHECK_S
        version = self._stamp_cursor.execute("PRAGMA data_version").fetchone()[0]
        stamp = int(version), self._db.total_changes
        if stamp != self._verified_stamp:
            self._verified_stamp = stamp
            self._verified.clear()

    def _look_up(self, key_id: str) -> tuple[KeyRecord | None, bytes | None]:
        """The stored record and secret digest of ``key_id``; (None, None) for an unknown id."""
        row = self._db.execute(
            f"SELECT {_COLUMNS}, secret_sha256 FROM api_keys WHERE id = ?", (key_id,)
        ).fetchone()
        if row is None:
            return None, None
        return _record(row), bytes(row["secret_sha256"])

    def _insert(self, record: KeyRecord, digest: bytes) -> None:
        self._db.execute(
            "INSERT INTO api_keys (id, secret_sha256, name, scopes, models, rate_limit, created_at,"
            " expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                record.id,
                digest,
                record.name,
                json.dumps(sorted(record.scopes)),
                json.dumps(record.models) if record.models is not None else None,
                record.rate_limit,
                record.created_at.timestamp(),
                record.expires_at.timestamp() if record.expires_at else None,
            ),
        )

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


def _record(row: sqlite3.Row) -> KeyRecord:
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
