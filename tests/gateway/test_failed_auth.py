"""Floods of bad keys: past the allowance an address is refused at once, valid keys are not."""

from __future__ import annotations

import pytest

from core.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from gateway.auth import Auth, KeyRecord, KeyScope, KeyStore, RateLimiter
from gateway.auth.failed_auth import FailedAuthentications
from tests.gateway.conftest import DEFAULT_LIMITS, Clock

BAD = "mdk_0123456789abcdef_" + "x" * 43
FLOOD = "203.0.113.7"


@pytest.fixture
def auth(key_store: KeyStore, clock: Clock) -> Auth:
    return Auth(
        key_store,
        RateLimiter("memory://", DEFAULT_LIMITS, False),
        failures=FailedAuthentications(3, 60, clock),
    )


async def attempt(auth: Auth, key: str, client: str = FLOOD) -> None:
    answer = auth.authenticate(f"Bearer {key}", None, KeyScope.PREDICT, None, client)
    if not isinstance(answer, KeyRecord):  # looked up in the database
        await answer


async def test_an_address_past_its_failures_is_refused_without_a_key_store_lookup(
    auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        with pytest.raises(Unauthenticated, match="unknown API key"):
            await attempt(auth, BAD)
    looked_up: list[str] = []
    monkeypatch.setattr(auth.keys, "_look_up_and_check", lambda key_id, secret: looked_up.append(key_id))
    with pytest.raises(ResourceExhausted, match=f"too many failed authentications from {FLOOD}") as refused:
        await attempt(auth, "mdk_fedcba9876543210_" + "y" * 43)
    assert int(refused.value.headers["Retry-After"]) == 60
    assert looked_up == []


async def test_a_remembered_valid_key_from_a_flooding_address_is_served(auth: Auth) -> None:
    key = (await auth.keys.create(["predict"])).key
    await attempt(auth, key)  # verified once: remembered
    for _ in range(5):
        with pytest.raises((Unauthenticated, ResourceExhausted)):
            await attempt(auth, BAD)
    await attempt(auth, key)
    new = (await auth.keys.create(["predict"])).key  # never seen here: refused until the window ends
    with pytest.raises(ResourceExhausted):
        await attempt(auth, new)


async def test_other_addresses_and_the_next_window_are_not_refused(auth: Auth, clock: Clock) -> None:
    key = (await auth.keys.create(["predict"])).key
    for _ in range(4):
        with pytest.raises((Unauthenticated, ResourceExhausted)):
            await attempt(auth, BAD)
    await attempt(auth, key, client="198.51.100.9")
    clock.advance(61)
    with pytest.raises(Unauthenticated):  # counted again from one
        await attempt(auth, BAD)


async def test_wrong_scopes_are_not_failed_authentications(auth: Auth) -> None:
    admin_only = (await auth.keys.create(["admin"])).key
    for _ in range(5):
        with pytest.raises(PermissionDenied, match="lacks the 'predict' scope"):
            await attempt(auth, admin_only)
    assert auth.failures.blocked_for(FLOOD) is None
