"""KeyStore, on SQLite and on a real PostgreSQL: keys are shown once, stored as hashes, verified
from memory once looked up, and every change is seen at the next request of every process."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from core.errors import InvalidInput, NotFound, Unauthenticated, Unavailable
from core.ports import free_port
from gateway.auth import KeyRecord, KeyScope, KeyStore, parse_expiry
from gateway.auth import keys as keys_module
from gateway.database.engine import Database, PostgresDatabase
from gateway.database.notifications import PostgresNotifications
from gateway.database.schema import api_keys, audit_log
from gateway.db import open_database
from gateway.registry import audit
from tests.conftest import close_any, open_any
from tests.gateway.conftest import Clock, key_store_of, verified
from tests.postgres_locks import Admin
from tests.services import PostgresServer
from tests.waiting import wait_until


async def test_created_key_has_prefix_public_id_and_secret(keys: KeyStore) -> None:
    created = await keys.create(["predict"], name="web")
    prefix, key_id, secret = created.key.split("_")
    assert (prefix, key_id) == ("mdk", created.record.id)
    assert len(secret) >= 40
    assert created.record.scopes == {KeyScope.PREDICT}
    assert created.record.name == "web"


async def test_verify_returns_the_record_of_a_valid_key(keys: KeyStore) -> None:
    created = await keys.create(["predict", "feedback"], models=["iris", "digits"], rate_limit="10/second")
    record = await verified(keys, created.key)
    assert record == created.record
    assert record.allows_model("iris")
    assert not record.allows_model("other")
    assert record.rate_limit == "10/second"


async def test_a_remembered_key_is_verified_at_once_without_a_lookup(
    keys: KeyStore, database: Database, database_url: str
) -> None:
    created = await keys.create(["predict"])
    # A store that starts after the key was made: no notification of its creation to come.
    async with key_store_of(database, database_url) as later:
        first = later.verify(created.key)
        assert not isinstance(first, KeyRecord)  # looked up: an awaitable
        assert await first == created.record
        assert later.verify(created.key) == created.record  # remembered: the record itself, no coroutine
        assert later.remembers(created.key)


async def test_the_database_holds_only_a_hash_of_the_secret(keys: KeyStore, database: Database) -> None:
    created = await keys.create(["admin"])
    secret = created.key.rsplit("_", 1)[1]

    def everything(connection: sa.Connection) -> str:
        tables = (api_keys, audit_log)
        return repr([connection.execute(sa.select(table)).all() for table in tables])

    stored = await database.read(everything)
    assert created.record.id in stored
    assert secret not in stored
    assert secret.encode().hex() not in stored


async def test_the_sqlite_files_hold_only_a_hash_of_the_secret(
    key_store: KeyStore, database_path: Path
) -> None:
    created = await key_store.create(["admin"])
    secret = created.key.rsplit("_", 1)[1]
    stored = b"".join(
        path.read_bytes() for path in database_path.parent.iterdir() if path.name.startswith("registry")
    )
    assert created.record.id.encode() in stored
    assert secret.encode() not in stored
    assert created.key.encode() not in stored


@pytest.mark.parametrize(
    ("presented", "problem"),
    [
        (None, "missing"),
        ("", "missing"),
        ("hello", "malformed"),
        ("mdk_0123456789abcdef_short", "malformed"),
        ("mdk_0123456789abcdef_" + "A" * 43, "unknown"),
    ],
)
async def test_verify_says_what_is_wrong_with_a_bad_key(
    keys: KeyStore, presented: str | None, problem: str
) -> None:
    with pytest.raises(Unauthenticated, match=problem):
        await verified(keys, presented)


async def test_a_wrong_secret_reads_like_an_unknown_key(keys: KeyStore) -> None:
    created = await keys.create(["predict"])
    with pytest.raises(Unauthenticated, match="unknown"):
        await verified(keys, forged(created.key))


async def test_a_wrong_secret_is_refused_after_the_right_one_was_verified(keys: KeyStore) -> None:
    created = await keys.create(["predict"])
    assert (await verified(keys, created.key)).id == created.record.id  # now remembered
    with pytest.raises(Unauthenticated, match="unknown"):
        await verified(keys, forged(created.key))
    assert not keys.remembers(forged(created.key))
    assert (await verified(keys, created.key)).id == created.record.id


def forged(key: str) -> str:
    return key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")


async def test_a_revocation_is_refused_by_another_process_at_its_next_request(
    keys: KeyStore, database: Database, database_url: str
) -> None:
    """On PostgreSQL each process has its own connections and notifications, as on two hosts."""
    created = await keys.create(["predict"])
    other_database = await open_any(database_url)
    try:
        async with key_store_of(other_database, database_url) as other:
            assert (await verified(other, created.key)).id == created.record.id
            assert other.verify(created.key) == created.record  # remembered there
            await keys.revoke(created.record.id)
            if database.backend == "postgresql":  # told by the revocation's notification
                await wait_until(lambda: not other.remembers(created.key), "the revocation to reach B")
            with pytest.raises(Unauthenticated, match="revoked"):
                await verified(other, created.key)
    finally:
        await close_any(other_database)


async def test_a_key_created_elsewhere_works_where_its_id_was_refused_before(
    keys: KeyStore, database: Database, database_url: str
) -> None:
    """An unknown id is remembered as unknown, until a key with it is made (an operator's key)."""
    operator_key = "mdk_0123456789abcdef_" + "K" * 43
    other_database = await open_any(database_url)
    try:
        async with key_store_of(other_database, database_url) as other:
            with pytest.raises(Unauthenticated, match="unknown"):
                await verified(other, operator_key)
            await keys.register(operator_key, ["predict"])
            if database.backend == "postgresql":
                await wait_until(lambda: not other._verified, "the registration to reach B")
            assert (await verified(other, operator_key)).id == "0123456789abcdef"
    finally:
        await close_any(other_database)


async def test_while_its_notifications_are_down_a_postgres_store_remembers_nothing(postgres_url: str) -> None:
    database = await open_any(postgres_url)
    notifications = PostgresNotifications(postgres_url)  # never started: not connected
    try:
        keys = KeyStore(database, notifications)
        created = await keys.create(["predict"])
        for _ in range(2):
            answer = keys.verify(created.key)
            assert not isinstance(answer, KeyRecord)  # looked up, every time
            assert (await answer).id == created.record.id
        assert not keys.remembers(created.key)
        await keys.revoke(created.record.id)
        with pytest.raises(Unauthenticated, match="revoked"):
            await verified(keys, created.key)
    finally:
        await notifications.close()
        await close_any(database)


async def test_a_key_that_cannot_be_looked_up_is_a_retryable_unavailable_not_a_failure() -> None:
    unreachable = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    database = PostgresDatabase(unreachable)
    try:
        with pytest.raises(Unavailable, match=r"the gateway database is unreachable\); retry"):
            await verified(KeyStore(database), "mdk_0123456789abcdef_" + "A" * 43)
    finally:
        await database.close()


async def test_a_change_made_past_the_key_store_is_seen_within_its_recheck_interval(
    key_store: KeyStore, database_path: Path
) -> None:
    """SQLite's safety net (PRAGMA data_version) for changes that wrote no change marker."""
    created = await key_store.create(["predict"])
    assert (await verified(key_store, created.key)).id == created.record.id  # now remembered
    other = open_database(database_path)
    try:  # raw SQL: no change marker is written
        other.execute("UPDATE api_keys SET revoked_at = 1 WHERE id = ?", (created.record.id,))
    finally:
        other.close()
    deadline = time.monotonic() + 10 * keys_module._RECHECK_S
    while await _still_accepted(key_store, created.key):
        assert time.monotonic() < deadline, "the raw revocation was never seen"
        await asyncio.sleep(0.05)
    with pytest.raises(Unauthenticated, match="revoked"):
        await verified(key_store, created.key)


async def _still_accepted(keys: KeyStore, key: str) -> bool:
    try:
        await verified(keys, key)
    except Unauthenticated:
        return False
    return True


async def test_revoking_twice_keeps_the_first_revocation_time(keys: KeyStore, clock: Clock) -> None:
    created = await keys.create(["predict"])
    first = await keys.revoke(created.record.id)
    clock.advance(60)
    assert (await keys.revoke(created.record.id)).revoked_at == first.revoked_at


async def test_revoking_an_unknown_key_is_not_found(keys: KeyStore) -> None:
    with pytest.raises(NotFound, match="no API key"):
        await keys.revoke("0123456789abcdef")
    with pytest.raises(NotFound, match="no API key"):
        await keys.get("0123456789abcdef")


async def test_key_stops_working_when_it_expires(keys: KeyStore, clock: Clock) -> None:
    created = await keys.create(["predict"], expires_at=keys.now() + timedelta(hours=1))
    await verified(keys, created.key)
    clock.advance(3601)
    with pytest.raises(Unauthenticated, match="expired"):
        await verified(keys, created.key)
    assert (await keys.get(created.record.id)).status(keys.now()) == "expired"


async def test_list_shows_every_key_with_its_status(keys: KeyStore) -> None:
    kept = await keys.create(["predict"], name="kept")
    gone = await keys.create(["admin"], name="gone")
    await keys.revoke(gone.record.id)
    now = keys.now()
    listed = {record.name: record.info(now).model_dump(mode="json") for record in await keys.list()}
    assert listed["kept"]["status"] == "active"
    assert listed["gone"]["status"] == "revoked"
    assert listed["kept"]["id"] == kept.record.id
    assert all("key" not in entry and "secret" not in str(entry) for entry in listed.values())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"scopes": []}, "at least one scope"),
        ({"scopes": ["predict", "root"]}, "unknown scope 'root'"),
        ({"scopes": ["predict"], "rate_limit": "100/fortnight"}, "not understood"),
        ({"scopes": ["predict"], "rate_limit": "0/minute"}, "one positive limit"),
        ({"scopes": ["predict"], "rate_limit": "1/second;5/minute"}, "one positive limit"),
        ({"scopes": ["predict"], "models": []}, "models list is empty"),
        ({"scopes": ["predict"], "models": ["a,b"]}, "without commas"),
        ({"scopes": ["predict"], "expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "in the past"),
        ({"scopes": ["predict"], "expires_at": datetime(2999, 1, 1)}, "no time zone"),
        ({"scopes": ["predict"], "name": "a\nb"}, "printable"),
    ],
)
async def test_create_rejects_bad_input_saying_what_to_fix(
    key_store: KeyStore, arguments: dict[str, object], message: str
) -> None:
    scopes = arguments.pop("scopes")
    with pytest.raises(InvalidInput, match=message):
        await key_store.create(scopes, **arguments)  # type: ignore[arg-type]
    assert await key_store.list() == []


def test_expiry_reads_dates_date_times_and_durations() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_expiry("2027-01-01", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_expiry("2027-01-01T06:30:00+02:00", now) == datetime(2027, 1, 1, 4, 30, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    with pytest.raises(InvalidInput, match="neither a date"):
        parse_expiry("next tuesday", now)


async def test_keys_created_revoked_and_expired_are_audited_without_their_secret(
    keys: KeyStore, database: Database, clock: Clock
) -> None:
    lasting = await keys.create(["predict"], name="lasting", actor="key:admin")
    brief = await keys.create(["predict"], name="brief", expires_at=keys.now() + timedelta(hours=1))
    await keys.revoke(lasting.record.id, actor="key:admin")
    assert await keys.audit_expiries() == 0
    clock.advance(3601)
    assert await keys.audit_expiries() == 1
    assert await keys.audit_expiries() == 0  # once
    events = await database.read(audit.events)
    assert [(e.action, e.actor, e.details["key_id"]) for e in events] == [
        ("key-expire", "gateway (expiry)", brief.record.id),
        ("key-revoke", "key:admin", lasting.record.id),
        ("key-create", "gateway", brief.record.id),
        ("key-create", "key:admin", lasting.record.id),
    ]
    text = repr(events)
    assert lasting.key.split("_")[2] not in text
    assert brief.key.split("_")[2] not in text


async def test_keys_seen_before_keep_working_while_postgresql_is_unreachable(
    postgres_url: str, postgres_cluster: PostgresServer
) -> None:
    """A PostgreSQL restart or outage: the clients already served keep being served, a key never
    seen gets a retryable 503, and once the database answers again every key is checked there."""
    database = await open_any(postgres_url)
    notifications = PostgresNotifications(postgres_url)
    keys = KeyStore(database, notifications)
    await notifications.start()
    admin = Admin(postgres_url, postgres_cluster.url())
    try:
        seen = await keys.create(["predict"])
        unseen = await keys.create(["predict"])
        revoked = await keys.create(["predict"])
        for created in (seen, revoked):
            assert (await verified(keys, created.key)).id == created.record.id
        await keys.revoke(revoked.record.id)

        async with admin.refusing_connections():
            await admin.terminate_all()  # what a restart does to open connections
            await wait_until(lambda: not notifications.connected, "the listener to see the outage")
            for _ in range(3):
                assert (await verified(keys, seen.key)).id == seen.record.id
            with pytest.raises(Unavailable, match="unreachable"):
                await verified(keys, unseen.key)
            with pytest.raises(Unavailable):  # its last answer was dropped with the revocation
                await verified(keys, revoked.key)

        await wait_until(lambda: notifications.connected, "the listener to reconnect", 15)
        assert (await verified(keys, unseen.key)).id == unseen.record.id
    finally:
        await notifications.close()
        await close_any(database)
