"""``GET /v1/series/summary`` through the in-process gateway and a real inference server: each
model the key may call, with the requests it answered as a rate, a p99 and an error rate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.asgi import lifespan

pytestmark = pytest.mark.e2e

BUSY, QUIET = "digits-sklearn", "digits-keras"
ROW = [0.0] * 16 + [5.0] * 32 + [0.0] * 16


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    yield process
    process.stop(timeout_s=10)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_the_summary_shows_each_callable_models_rate_p99_and_error_rate(
    tmp_path: Path, server: ServerProcess, demo_packages: dict[str, Path]
) -> None:
    settings = GatewaySettings(data_dir=tmp_path, backends=[server.address], grpc_port=0)
    app = create_app(settings)
    async with lifespan(app):
        store = app.state.auth.keys
        admin = (await store.create(["admin"])).key
        caller = (await store.create(["predict"], models=[BUSY])).key
        stranger = (await store.create(["predict"], models=["another-model"])).key
        feedback = (await store.create(["feedback"])).key
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            for model in (BUSY, QUIET):
                pushed = await http.post(
                    "/v1/admin/packages",
                    content=demo_packages[model].read_bytes(),
                    headers={**bearer(admin), "content-type": "application/octet-stream"},
                )
                assert pushed.status_code == 201, pushed.text
            for _ in range(6):
                answer = await http.post(
                    f"/v1/models/{BUSY}:predict", json={"instances": [ROW]}, headers=bearer(caller)
                )
                assert answer.status_code == 200, answer.text

            mine = await http.get("/v1/series/summary", headers=bearer(caller))
            everything = await http.get("/v1/series/summary?window=1m", headers=bearer(admin))
            none = await http.get("/v1/series/summary", headers=bearer(stranger))
            bad = await http.get("/v1/series/summary?window=2h", headers=bearer(caller))
            unscoped = await http.get("/v1/series/summary", headers=bearer(feedback))
            anonymous = await http.get("/v1/series/summary")

    assert (bad.status_code, unscoped.status_code, anonymous.status_code) == (400, 403, 401)
    assert "window must last 1m to 1h" in bad.json()["error"]
    assert none.status_code == 200
    assert none.json()["models"] == []
    assert mine.status_code == 200, mine.text
    assert (mine.json()["window"], mine.json()["window_s"]) == ("5m", 300)
    [busy] = mine.json()["models"]
    assert busy["model"] == BUSY
    assert busy["requests_per_s"] == pytest.approx(6 / 290, rel=0.05)  # the window's 29 to 30 buckets
    assert busy["error_rate"] == 0
    assert busy["p99_ms"] > 0
    assert [v["version"] for v in busy["versions"]] == ["1"]
    assert everything.status_code == 200, everything.text
    by_name = {model["model"]: model for model in everything.json()["models"]}
    assert set(by_name) == {BUSY, QUIET}
    assert by_name[BUSY]["requests_per_s"] > 0
    assert (by_name[QUIET]["requests_per_s"], by_name[QUIET]["p99_ms"], by_name[QUIET]["error_rate"]) == (
        0,
        None,
        None,
    )
