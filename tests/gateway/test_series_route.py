"""``GET /v1/models/{m}/series`` through the in-process gateway and a real inference server:
the predictions and feedback sent come back as the version's counts, to keys that may use the model."""

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

MODEL = "digits-sklearn"
ROW = [0.0] * 16 + [5.0] * 32 + [0.0] * 16


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    yield process
    process.stop(timeout_s=10)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_predictions_and_feedback_come_back_as_the_versions_series(
    tmp_path: Path, server: ServerProcess, demo_packages: dict[str, Path]
) -> None:
    settings = GatewaySettings(data_dir=tmp_path, backends=[server.address], grpc_port=0)
    app = create_app(settings)
    async with lifespan(app):
        store = app.state.auth.keys
        admin = (await store.create(["admin"])).key
        caller = (await store.create(["predict"], models=[MODEL])).key
        feedback = (await store.create(["feedback"], models=[MODEL])).key
        stranger = (await store.create(["predict"], models=["another-model"])).key
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            pushed = await http.post(
                "/v1/admin/packages",
                content=demo_packages[MODEL].read_bytes(),
                headers={**bearer(admin), "content-type": "application/octet-stream"},
            )
            assert pushed.status_code == 201, pushed.text
            request_ids = []
            for path in [f"/v1/models/{MODEL}:predict"] * 5 + [f"/v1/models/{MODEL}/versions/1:predict"] * 2:
                answer = await http.post(path, json={"instances": [ROW]}, headers=bearer(caller))
                assert answer.status_code == 200, answer.text
                request_ids.append(answer.headers["x-request-id"])
            refused = await http.post(
                f"/v1/models/{MODEL}:predict", json={"instances": [[1.0]]}, headers=bearer(caller)
            )
            assert refused.status_code == 400  # never reached the version: not in its series
            for request_id in request_ids[:2]:  # routed requests (the live version) take feedback
                given = await http.post(
                    f"/v1/models/{MODEL}/feedback",
                    json={"request_id": request_id, "reward": 0.5},
                    headers=bearer(feedback),
                )
                assert given.status_code == 200, given.text

            read = await http.get(f"/v1/models/{MODEL}/series", headers=bearer(caller))
            day = await http.get(f"/v1/models/{MODEL}/series?window=24h", headers=bearer(admin))
            forbidden = await http.get(f"/v1/models/{MODEL}/series", headers=bearer(stranger))
            bad = await http.get(f"/v1/models/{MODEL}/series?window=5m", headers=bearer(caller))
            unknown = await http.get("/v1/models/nope/series", headers=bearer(admin))

    assert (forbidden.status_code, bad.status_code, unknown.status_code) == (403, 400, 404)
    for answer, resolution, buckets in ((read, 10, 360), (day, 60, 1440)):
        assert answer.status_code == 200, answer.text
        series = answer.json()
        assert (series["model"], series["resolution_s"]) == (MODEL, resolution)
        assert len(series["starts"]) == buckets
        [arm] = series["versions"]
        assert arm["version"] == "1"
        assert round(sum(arm["requests_per_s"]) * resolution) == 7
        assert sum(arm["errors_per_s"]) == 0
        filled = [i for i, rate in enumerate(arm["requests_per_s"]) if rate]
        assert all(arm["p50_ms"][i] > 0 and arm["p99_ms"][i] >= arm["p50_ms"][i] for i in filled)
        rewards = [mean for mean in arm["reward_mean"] if mean is not None]
        assert rewards
        assert set(rewards) == {0.5}
