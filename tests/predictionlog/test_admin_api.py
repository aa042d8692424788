"""The prediction log routes of the whole gateway app in process: bad settings and unknown models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.asgi import lifespan


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(GatewaySettings(data_dir=tmp_path, grpc_port=0))
    async with lifespan(app):
        key = (await app.state.auth.keys.create(["admin"])).key
        transport = httpx.ASGITransport(app=app)
        headers = {"authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=headers
        ) as client:
            yield client


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sample_rate": 0}, "sample_rate must be a number more than 0 and at most 1"),
        ({"sample_rate": 1.5}, "sample_rate must be a number more than 0 and at most 1"),
        ({"max_mb": 0}, "max_mb must be a whole number of MiB from 1 to 102400 (100 GiB)"),
        ({"max_mb": 10**9}, "max_mb must be a whole number of MiB from 1 to 102400 (100 GiB)"),
        ({"max_mb": 1.5}, "max_mb must be a whole number of MiB"),
        ({"rate": 0.1}, "rate: Extra inputs are not permitted"),
    ],
)
async def test_a_setting_out_of_bounds_is_a_400_that_says_what_to_send(
    admin: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    answer = await admin.put("/v1/admin/models/any/logs", json=body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


async def test_every_route_answers_404_for_a_model_the_registry_does_not_know(
    admin: httpx.AsyncClient,
) -> None:
    for method, path in [
        ("PUT", "/v1/admin/models/nope/logs"),
        ("GET", "/v1/admin/models/nope/logs"),
        ("DELETE", "/v1/admin/models/nope/logs?purge=true"),
        ("GET", "/v1/admin/models/nope/logs/export?since=60"),
    ]:
        answer = await admin.request(method, path, json={} if method == "PUT" else None)
        assert answer.status_code == 404, (method, path, answer.text)
        assert "nope" in answer.json()["error"]


async def test_an_export_needs_a_number_of_seconds(admin: httpx.AsyncClient) -> None:
    missing = await admin.get("/v1/admin/models/nope/logs/export")
    assert missing.status_code == 400
    assert "give since" in missing.json()["error"]
    wrong = await admin.get("/v1/admin/models/nope/logs/export", params={"since": "1h"})
    assert wrong.status_code == 400
    assert "since must be a number of seconds" in wrong.json()["error"]
