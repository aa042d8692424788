"""One prediction path: the fast path and Starlette's routing answer every request the same.

The gateway sends prediction POSTs straight to their endpoints (``GatewayApp``); everything
else, and the same routes, go through Starlette's middleware and router. Each request below is
sent once through each, with its own key of the same budget, and the answers must be equal in
status, headers and body, with the app at the root and mounted under a root path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from core.server_process import ServerProcess, start_server_process
from gateway.app import GatewayApp, create_app
from gateway.settings import GatewaySettings
from tests.gateway.asgi import lifespan

pytestmark = pytest.mark.e2e

ROW = [0.0] * 16 + [5.0] * 32 + [0.0] * 16
V2_BODY = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": ROW}]}
# Headers that differ by design between two answers: none. Rate-limit headers match because
# each path has its own key with the same budget and sees the same sequence of requests.
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("v1 rows", "/v1/models/digits-sklearn:predict", {"json": {"instances": [ROW]}}),
    ("v1 labels", "/v1/models/digits-sklearn:predict?labels=true", {"json": {"instances": [ROW, ROW]}}),
    ("v1 columns", "/v1/models/digits-sklearn/versions/1:predict", {"json": {"inputs": [ROW]}}),
    ("v2", "/v2/models/digits-sklearn/infer", {"json": V2_BODY}),
    ("bad json", "/v1/models/digits-sklearn:predict", {"content": b"{not json"}),
    ("wrong width", "/v1/models/digits-sklearn:predict", {"json": {"instances": [[1.0, 2.0]]}}),
    ("unknown model", "/v1/models/nope:predict", {"json": {"instances": [ROW]}}),
    ("unknown version", "/v2/models/digits-sklearn/versions/9/infer", {"json": V2_BODY}),
    ("empty v2", "/v2/models/digits-sklearn/infer", {"json": {"inputs": []}}),
    ("no key", "/v1/models/digits-sklearn:predict", {"json": {"instances": [ROW]}, "key": None}),
    ("bad scheme", "/v1/models/digits-sklearn:predict", {"json": {}, "authorization": "Basic x"}),
]


@dataclass
class Running:
    app: GatewayApp
    keys: tuple[str, str]


def through_starlette(app: GatewayApp) -> Any:
    """The same app, its fast path skipped: Starlette's middleware stack and router."""

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await Starlette.__call__(app, scope, receive, send)

    return slow


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    yield process
    process.stop(timeout_s=10)


@pytest.fixture
async def running(
    tmp_path: Path, server: ServerProcess, demo_packages: dict[str, Path]
) -> AsyncIterator[Running]:
    settings = GatewaySettings(
        data_dir=tmp_path, backends=[server.address], grpc_port=0, rate_limit_predict="1000/minute"
    )
    app = create_app(settings)
    async with lifespan(app):
        store = app.state.auth.keys
        admin = (await store.create(["admin"])).key
        fast_key, slow_key = (await store.create(["predict"])).key, (await store.create(["predict"])).key
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            pushed = await http.post(
                "/v1/admin/packages",
                content=demo_packages["digits-sklearn"].read_bytes(),
                headers={"authorization": f"Bearer {admin}", "content-type": "application/octet-stream"},
            )
            assert pushed.status_code == 201, pushed.text
        yield Running(app, (fast_key, slow_key))


async def answers(app: Any, key: str, root_path: str) -> list[tuple[int, dict[str, str], Any]]:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    results = []
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        for number, (_, path, options) in enumerate(REQUESTS):
            options = dict(options)
            headers = {"x-request-id": f"same-{number}"}
            presented = options.pop("key", key)
            if "authorization" in options:
                headers["authorization"] = options.pop("authorization")
            elif presented is not None:
                headers["authorization"] = f"Bearer {presented}"
            answer = await http.post(root_path + path, headers=headers, **options)
            kept = {k: v for k, v in answer.headers.items() if k != "x-ratelimit-reset"}
            body = json.loads(answer.content) if answer.content else None
            results.append((answer.status_code, kept, body))
    return results


@pytest.mark.parametrize("root_path", ["", "/serving"])
async def test_fast_path_and_starlette_routing_give_the_same_answers(
    running: Running, root_path: str
) -> None:
    fast_key, slow_key = running.keys
    fast = await answers(running.app, fast_key, root_path)
    slow = await answers(through_starlette(running.app), slow_key, root_path)
    for (name, _, _), got_fast, got_slow in zip(REQUESTS, fast, slow, strict=True):
        assert got_fast == got_slow, name
    statuses = {name: status for (name, _, _), (status, _, _) in zip(REQUESTS, fast, strict=True)}
    assert statuses == {
        "v1 rows": 200,
        "v1 labels": 200,
        "v1 columns": 200,
        "v2": 200,
        "bad json": 400,
        "wrong width": 400,
        "unknown model": 404,
        "unknown version": 404,
        "empty v2": 400,
        "no key": 401,
        "bad scheme": 401,
    }


async def test_the_fast_path_claims_what_the_router_would_route(running: Running) -> None:
    predictions = running.app._predictions
    for path, claimed in [
        ("/v1/models/m:predict", True),
        ("/v1/models/m/versions/2:predict", True),
        ("/v2/models/m/infer", True),
        ("/v2/models/m/versions/2/infer", True),
        ("/v2/models/m/ready", False),
        ("/v1/models/m/feedback", False),
        ("/v1/models/a/b:predict", False),
    ]:
        scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/api" + path, "root_path": "/api"}
        assert (predictions.claim(scope) is not None) is claimed, path
    get: dict[str, Any] = {"type": "http", "method": "GET", "path": "/v1/models/m:predict"}
    assert predictions.claim(get) is None  # 405 is the router's answer
