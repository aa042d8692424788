"""KeyStore: keys are shown once, stored as hashes, and every change is seen at the next request."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.errors import InvalidInput, NotFound, Unauthenticated
from gateway.auth import KeyScope, KeyStore, parse_expiry
from gateway.auth import keys as keys_module
from gateway.db import open_database
from gateway.registry import audit
from tests.gateway.conftest import Clock


def test_created_key_has_prefix_public_id_and_secret(key_store: KeyStore) -> None:
    created = key_store.create(["predict"], name="web")
    prefix, key_id, secret = created.key.split("_")
    assert (prefix, key_id) == ("mdk", created.record.id)
    assert len(secret) >= 40
    assert created.record.scopes == {KeyScope.PREDICT}
    assert created.record.name == "web"


def test_verify_returns_the_record_of_a_valid_key(key_store: KeyStore) -> None:
    created = key_store.create(["predict", "feedback"], models=["iris", "digits"], rate_limit="10/second")
    record = key_store.verify(created.key)
    assert record == created.record
    assert record.allows_model("iris")
    assert not record.allows_model("other")
    assert record.rate_limit == "10/second"


def test_database_holds_only_a_hash_of_the_secret(key_store: KeyStore, database_path: Path) -> None:
    created = key_store.create(["admin"])
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
def test_verify_says_what_is_wrong_with_a_bad_key(
    key_store: KeyStore, presented: str | None, problem: str
) -> None:
    with pytest.raises(Unauthenticated, match=problem):
        key_store.verify(presented)


def test_a_wrong_secret_reads_like_an_unknown_key(key_store: KeyStore) -> None:
    created = key_store.create(["predict"])
    forged = created.key[:-4] + ("AAAA" if not created.key.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthenticated, match="unknown"):
        key_store.verify(forged)


def test_a_wrong_secret_is_refused_after_the_right_one_was_verified(key_store: KeyStore) -> None:
    created = key_store.create(["predict"])
    assert key_store.verify(created.key).id == created.record.id  # now remembered
    forged = created.key[:-4] + ("AAAA" if not created.key.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthenticated, match="unknown"):
        key_store.verify(forged)
    assert key_store.verify(created.key).id == created.record.id


def test_revocation_is_seen_at_once_by_another_connection(key_store: KeyStore, database_path: Path) -> None:
    created = key_store.create(["predict"])
    other_process = open_database(database_path)
    try:
        other = KeyStore(other_process)
        assert other.verify(created.key).id == created.record.id
        key_store.revoke(created.record.id)
        with pytest.raises(Unauthenticated, match="revoked"):
            other.verify(created.key)
    finally:
        other_process.close()


def test_a_change_made_past_the_key_store_is_seen_within_its_recheck_interval(
    key_store: KeyStore, database_path: Path
) -> None:
    created = key_store.create(["predict"])
    assert key_store.verify(created.key).id == created.record.id  # now remembered
    other = open_database(database_path)
    try:  # raw SQL: no change marker is written
        other.execute("UPDATE api_keys SET revoked_at = 1 WHERE id = ?", (created.record.id,))
    finally:
        other.close()
    deadline = time.monotonic() + 10 * keys_module._RECHECK_S
    while _still_accepted(key_store, created.key):
        assert time.monotonic() < deadline, "the raw revocation was never seen"
        time.sleep(0.05)
    with pytest.raises(Unauthenticated, match="revoked"):
        key_store.verify(created.key)


def _still_accepted(key_store: KeyStore, key: str) -> bool:
    try:
        key_store.verify(key)
    except Unauthenticated:
        return False
    return True


def test_revoking_twice_keeps_the_first_revocation_time(key_store: KeyStore, clock: Clock) -> None:
    created = key_store.create(["predict"])
    first = key_store.revoke(created.record.id)
    clock.advance(60)
    assert key_store.revoke(created.record.id).revoked_at == first.revoked_at


def test_revoking_an_unknown_key_is_not_found(key_store: KeyStore) -> None:
    with pytest.raises(NotFound, match="no API key"):
        key_store.revoke("0123456789abcdef")


def test_key_stops_working_when_it_expires(key_store: KeyStore, clock: Clock) -> None:
    created = key_store.create(["predict"], expires_at=key_store.now() + timedelta(hours=1))
    key_store.verify(created.key)
    clock.advance(3601)
    with pytest.raises(Unauthenticated, match="expired"):
        key_store.verify(created.key)
    assert key_store.get(created.record.id).status(key_store.now()) == "expired"


def test_list_shows_every_key_with_its_status(key_store: KeyStore) -> None:
    kept = key_store.create(["predict"], name="kept")
    gone = key_store.create(["admin"], name="gone")
    key_store.revoke(gone.record.id)
    now = key_store.now()
    listed = {record.name: record.info(now).model_dump(mode="json") for record in key_store.list()}
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
def test_create_rejects_bad_input_saying_what_to_fix(
    key_store: KeyStore, arguments: dict[str, object], message: str
) -> None:
    scopes = arguments.pop("scopes")
    with pytest.raises(InvalidInput, match=message):
        key_store.create(scopes, **arguments)  # type: ignore[arg-type]
    assert key_store.list() == []


def test_expiry_reads_dates_date_times_and_durations() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_expiry("2027-01-01", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_expiry("2027-01-01T06:30:00+02:00", now) == datetime(2027, 1, 1, 4, 30, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    with pytest.raises(InvalidInput, match="neither a date"):
        parse_expiry("next tuesday", now)


def test_keys_created_revoked_and_expired_are_audited_without_their_secret(
    key_store: KeyStore, clock: Clock
) -> None:
    lasting = key_store.create(["predict"], name="lasting", actor="key:admin")
    brief = key_store.create(["predict"], name="brief", expires_at=key_store.now() + timedelta(hours=1))
    key_store.revoke(lasting.record.id, actor="key:admin")
    assert key_store.audit_expiries() == 0
    clock.advance(3601)
    assert key_store.audit_expiries() == 1
    assert key_store.audit_expiries() == 0  # once
    events = audit.events(key_store._db)  # the store's own connection: one database
    assert [(e.action, e.actor, e.details["key_id"]) for e in events] == [
        ("key-expire", "gateway (expiry)", brief.record.id),
        ("key-revoke", "key:admin", lasting.record.id),
        ("key-create", "gateway", brief.record.id),
        ("key-create", "key:admin", lasting.record.id),
    ]
    text = repr(events)
    assert lasting.key.split("_")[2] not in text
    assert brief.key.split("_")[2] not in text
