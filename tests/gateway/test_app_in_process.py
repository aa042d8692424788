"""The whole gateway app in process (``create_app`` over httpx's ASGI transport), no backend.

What needs no inference server: health, auth on every route, metadata, key administration,
rate limits, the OpenAPI document, and the errors of predictions for models that are not there.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel

from gateway.app import GatewayApp, create_app
from gateway.rest.api_doc import operation_of
from gateway.rest.openapi import endpoints
from gateway.settings import GatewaySettings
from tests.gateway.asgi import lifespan
from tests.waiting import wait_until


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[GatewayApp]:
    gateway = create_app(GatewaySettings(data_dir=tmp_path, grpc_port=0, rate_limit_predict="3/minute"))
    async with lifespan(gateway):
        yield gateway


@pytest.fixture
async def http(app: GatewayApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_health_needs_no_key_and_readiness_says_there_is_no_server(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v2/health/live")).status_code == 200
    ready = await http.get("/v2/health/ready")
    assert ready.status_code == 503
    assert ready.json() == {"error": "no inference server is available"}


async def test_every_other_route_wants_a_key_and_says_how_to_send_it(http: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/models/m:predict"), ("GET", "/v1/admin/keys")]:
        answer = await http.request(method, path, json={})
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer <key>" in answer.json()["error"]
        assert answer.headers["x-request-id"]


async def test_an_admin_key_made_through_the_api_works_and_stops_when_revoked(
    app: GatewayApp, http: httpx.AsyncClient
) -> None:
    admin = (await app.state.auth.keys.create(["admin"])).key
    made = await http.post("/v1/admin/keys", json={"scopes": ["predict"]}, headers=bearer(admin))
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["id"]
    assert (await http.get("/v1/models", headers=bearer(key))).json() == {"models": []}
    assert (await http.delete(f"/v1/admin/keys/{key_id}", headers=bearer(admin))).status_code == 200
    assert (await http.get("/v1/models", headers=bearer(key))).status_code == 401


async def test_predictions_for_a_model_that_is_not_there_are_404_and_count_against_the_limit(
    app: GatewayApp, http: httpx.AsyncClient
) -> None:
    key = (await app.state.auth.keys.create(["predict"])).key
    answers = [
        await http.post("/v1/models/nope:predict", json={"instances": [[1]]}, headers=bearer(key))
        for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [404, 404, 404, 429]
    assert "model 'nope' is not served" in answers[0].json()["error"]
    assert [a.headers["x-ratelimit-remaining"] for a in answers[:3]] == ["2", "1", "0"]
    assert answers[3].headers["retry-after"]


async def test_the_openapi_document_lists_the_prediction_and_admin_routes(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    for path in ("/v1/models/{model}:predict", "/v2/models/{model}/infer", "/v1/admin/packages"):
        assert path in paths


async def test_predictions_and_metadata_routes_spend_one_budget_in_slowapis_storage(
    app: GatewayApp, http: httpx.AsyncClient
) -> None:
    key = (await app.state.auth.keys.create(["predict"])).key
    fast = await http.post("/v1/models/nope:predict", json={"instances": [[1]]}, headers=bearer(key))
    listed = await http.get("/v1/models", headers=bearer(key))  # a Starlette route, counted by slowapi
    again = await http.post("/v1/models/nope:predict", json={"instances": [[1]]}, headers=bearer(key))
    assert [a.headers["x-ratelimit-remaining"] for a in (fast, listed, again)] == ["2", "1", "0"]
    refused = await http.get("/v1/models", headers=bearer(key))
    assert refused.status_code == 429
    assert refused.json()["error"].startswith("Rate limit exceeded: 3 per 1 minute for API key")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-request-id"]
    assert app.state.limiter is app.state.auth.limiter.slowapi


async def test_route_answers_carry_integer_rate_headers_and_no_retry_after_when_allowed(
    app: GatewayApp, http: httpx.AsyncClient
) -> None:
    key = (await app.state.auth.keys.create(["predict"])).key
    listed = await http.get("/v1/models", headers=bearer(key))
    assert listed.status_code == 200
    assert listed.headers["x-ratelimit-reset"].isdigit()
    assert "retry-after" not in listed.headers


def declared_answer(app: GatewayApp, method: str, path: str) -> type[BaseModel]:
    for route_path, route_method, route in endpoints(app.routes):
        if (route_path, route_method) == (path, method.lower()):
            operation = operation_of(route.endpoint)
            assert operation is not None
            assert operation.answer is not None
            return operation.answer
    raise AssertionError(f"no route {method} {path}")


async def test_answers_are_the_models_their_operations_declare(
    app: GatewayApp, http: httpx.AsyncClient
) -> None:
    admin = bearer((await app.state.auth.keys.create(["admin", "predict"])).key)
    created = await http.post("/v1/admin/keys", json={"scopes": ["predict"], "name": "p"}, headers=admin)
    key_id = created.json()["id"]
    calls = [
        ("POST", "/v1/admin/keys", created),
        ("GET", "/v1/admin/keys", await http.get("/v1/admin/keys", headers=admin)),
        ("GET", "/v1/admin/keys/{key_id}", await http.get(f"/v1/admin/keys/{key_id}", headers=admin)),
        ("DELETE", "/v1/admin/keys/{key_id}", await http.delete(f"/v1/admin/keys/{key_id}", headers=admin)),
        ("GET", "/v1/admin/models", await http.get("/v1/admin/models", headers=admin)),
        ("GET", "/v1/admin/audit", await http.get("/v1/admin/audit", headers=admin)),
        ("GET", "/v1/models", await http.get("/v1/models", headers=admin)),
        ("GET", "/v2", await http.get("/v2", headers=admin)),
        ("GET", "/v2/health/live", await http.get("/v2/health/live")),
    ]
    for method, path, answer in calls:
        assert answer.status_code in (200, 201), (path, answer.text)
        model = declared_answer(app, method, path)
        assert (
            model.model_validate_json(answer.content).model_dump(mode="json", by_alias=True) == answer.json()
        )


async def test_a_key_revoked_through_one_gateway_host_is_refused_by_another_on_the_same_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    """Each gateway with its own data folder, as on its own host; keys in one PostgreSQL."""
    gateways = [
        create_app(GatewaySettings(data_dir=tmp_path / name, grpc_port=0, database_url=postgres_url))
        for name in ("host-1", "host-2")
    ]
    async with lifespan(gateways[0]), lifespan(gateways[1]):
        first, second = (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
            for app in gateways
        )
        async with first, second:
            assert gateways[1].state.notifications.connected
            admin = (await gateways[0].state.auth.keys.create(["admin"])).key
            made = await first.post("/v1/admin/keys", json={"scopes": ["predict"]}, headers=bearer(admin))
            key, key_id = made.json()["key"], made.json()["id"]
            keys = gateways[1].state.auth.keys
            deadline = time.monotonic() + 10
            while not keys.remembers(key):  # until the key's creation was told there too
                assert (await second.get("/v1/models", headers=bearer(key))).status_code == 200
                assert time.monotonic() < deadline, "the second host never remembered the key"
            assert (await second.get("/v1/models", headers=bearer(key))).status_code == 200
            revoked = await first.delete(f"/v1/admin/keys/{key_id}", headers=bearer(admin))
            assert revoked.status_code == 200
            await wait_until(lambda: not keys.remembers(key), "the revocation's notification")
            refused = await second.get("/v1/models", headers=bearer(key))
            assert refused.status_code == 401
            assert "revoked" in refused.json()["error"]
