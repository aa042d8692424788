"""The guard on a small app: 401/403/429 with the right headers, and the route table it marks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from limits.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import CollectorRegistry, Counter

from core.errors import ResourceExhausted
from gateway.auth import Auth, KeyScope, KeyStore, RateLimiter, route_scopes
from gateway.auth.authorization import granted
from gateway.auth.loop_counters import LoopCounters
from gateway.auth.ratelimit import api_key_id
from gateway.database.engine import SQLiteDatabase
from gateway.db import open_database
from gateway.settings import GatewaySettings
from tests.conftest import close_any
from tests.gateway.conftest import DEFAULT_LIMITS, Clock, guarded_app

PREDICT = "/v1/models/iris:predict"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_unauthenticated(response: httpx.Response, problem: str) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert problem in response.json()["error"]


async def test_valid_key_passes_with_rate_limit_headers(http: httpx.AsyncClient, key_store: KeyStore) -> None:
    created = await key_store.create(["predict"])
    response = await http.post(PREDICT, headers=bearer(created.key))
    assert response.status_code == 200
    assert response.json() == {"model": "iris", "key": created.record.id}
    assert response.headers["X-RateLimit-Limit"] == "1000"
    assert response.headers["X-RateLimit-Remaining"] == "999"
    assert int(response.headers["X-RateLimit-Reset"]) > 0


async def test_key_is_accepted_in_the_x_api_key_header(http: httpx.AsyncClient, key_store: KeyStore) -> None:
    created = await key_store.create(["predict"])
    response = await http.post(PREDICT, headers={"X-API-Key": created.key})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer not-a-key"}, "malformed API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "must read 'Bearer <key>'"),
        ({"X-API-Key": "mdk_0123456789abcdef_" + "x" * 43}, "unknown API key"),
    ],
)
async def test_request_without_a_valid_key_is_401(
    http: httpx.AsyncClient, headers: dict[str, str], problem: str
) -> None:
    assert_unauthenticated(await http.post(PREDICT, headers=headers), problem)


async def test_revoked_key_is_401_on_its_next_request(http: httpx.AsyncClient, key_store: KeyStore) -> None:
    created = await key_store.create(["predict"])
    assert (await http.post(PREDICT, headers=bearer(created.key))).status_code == 200
    await key_store.revoke(created.record.id)
    assert_unauthenticated(await http.post(PREDICT, headers=bearer(created.key)), "revoked")


async def test_expired_key_is_401(http: httpx.AsyncClient, key_store: KeyStore, clock: Clock) -> None:
    created = await key_store.create(["predict"], expires_at=key_store.now() + timedelta(days=1))
    clock.advance(timedelta(days=1, seconds=1).total_seconds())
    assert_unauthenticated(await http.post(PREDICT, headers=bearer(created.key)), "expired")


async def test_key_without_the_routes_scope_is_403_naming_the_scope(
    http: httpx.AsyncClient, key_store: KeyStore
) -> None:
    created = await key_store.create(["feedback"])
    response = await http.post(PREDICT, headers=bearer(created.key))
    assert response.status_code == 403
    assert "'predict' scope" in response.json()["error"]


async def test_key_limited_to_other_models_is_403_naming_the_model(
    http: httpx.AsyncClient, key_store: KeyStore
) -> None:
    created = await key_store.create(["predict"], models=["digits"])
    response = await http.post(PREDICT, headers=bearer(created.key))
    assert response.status_code == 403
    assert "'iris'" in response.json()["error"]
    assert (await http.post("/v1/models/digits:predict", headers=bearer(created.key))).status_code == 200


async def test_over_the_limit_is_429_with_retry_after(http: httpx.AsyncClient, key_store: KeyStore) -> None:
    created = await key_store.create(["predict"], rate_limit="2/minute")
    for remaining in ("1", "0"):
        response = await http.post(PREDICT, headers=bearer(created.key))
        assert response.headers["X-RateLimit-Remaining"] == remaining
    refused = await http.post(PREDICT, headers=bearer(created.key))
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert "2 per 1 minute" in refused.json()["error"]


async def test_errors_raised_by_the_endpoint_keep_the_rate_limit_headers(
    http: httpx.AsyncClient, key_store: KeyStore
) -> None:
    created = await key_store.create(["feedback"])
    response = await http.post("/v1/models/iris/feedback", headers=bearer(created.key))
    assert response.status_code == 404
    assert response.headers["X-RateLimit-Remaining"] == "999"


async def test_storage_outage_fails_closed_with_503(key_store: KeyStore) -> None:
    # Nothing listens on port 1: the storage is unreachable from the first request.
    limiter = RateLimiter("redis://127.0.0.1:1", DEFAULT_LIMITS, fail_open=False)
    transport = httpx.ASGITransport(app=guarded_app(Auth(key_store, limiter)))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        created = await key_store.create(["predict"])
        response = await client.post(PREDICT, headers=bearer(created.key))
    await limiter.aclose()
    assert response.status_code == 503
    assert "rate-limit storage" in response.json()["error"]


async def test_health_answers_without_a_key(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v2/health/live")).status_code == 200


def test_route_table_marks_every_guarded_route_with_its_scope() -> None:
    table = route_scopes(guarded_app().routes)
    assert table["GET,HEAD /v2/health/live"] is None
    assert table["POST /v1/models/{model}:predict"] is KeyScope.PREDICT
    guarded = {route: scope for route, scope in table.items() if "/health/" not in route}
    assert all(scope is not None for scope in guarded.values()), guarded
    assert {scope for route, scope in guarded.items() if "/admin/" in route} == {KeyScope.ADMIN}


async def test_auth_from_settings_takes_the_scope_defaults_and_counts_refusals(tmp_path: Path) -> None:
    settings = GatewaySettings(data_dir=tmp_path, rate_limit_predict="2/minute", rate_limit_fail_open=True)
    database = SQLiteDatabase.open(open_database(settings.database_path))
    registry = CollectorRegistry()
    refused = Counter("refused", "requests refused with 429", ["scope"], registry=registry)
    auth = Auth.from_settings(settings, database, refused)
    key = (await auth.keys.create(["predict"])).key
    try:
        await granted(auth.authorize(f"Bearer {key}", None, KeyScope.PREDICT, "iris"))
        assert (await granted(auth.authorize(None, key, KeyScope.PREDICT, "iris"))).rate.remaining == 0
        with pytest.raises(ResourceExhausted):
            await granted(auth.authorize(f"Bearer {key}", None, KeyScope.PREDICT, "iris"))
        assert registry.get_sample_value("refused_total", {"scope": "predict"}) == 1
    finally:
        await auth.aclose()
        await close_any(database)


def test_one_slowapi_limiter_is_configured_by_key_storage_strategy_and_headers(auth: Auth) -> None:
    limiter = auth.limiter.slowapi
    assert limiter._key_func is api_key_id
    assert isinstance(limiter.limiter, SlidingWindowCounterRateLimiter)
    assert isinstance(limiter.limiter.storage, LoopCounters)  # memory://, shared with predictions
    assert limiter._headers_enabled
