"""``GET /v1/models/{m}/samples`` through the in-process gateway and a real inference server: the
package's own sample rows, in a body the predict API takes as it is, to keys that may use the model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.app import create_app
from gateway.registry.samples import MAX_ROWS, MAX_VALUES, SampleCache, rows_that_fit
from gateway.settings import GatewaySettings
from modelpkg import read_package
from tests.gateway.asgi import lifespan

pytestmark = pytest.mark.e2e

MODEL = "digits-sklearn"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    yield process
    process.stop(timeout_s=10)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@dataclass
class Rig:
    http: httpx.AsyncClient
    cache: SampleCache
    admin: str
    caller: str
    stranger: str
    feedback_only: str


@asynccontextmanager
async def gateway(tmp_path: Path, server: ServerProcess, package: bytes) -> AsyncIterator[Rig]:
    """A gateway with the sklearn demo model pushed, an admin key and a predict key for the model."""
    app = create_app(GatewaySettings(data_dir=tmp_path, backends=[server.address], grpc_port=0))
    async with lifespan(app):
        store = app.state.auth.keys
        admin = (await store.create(["admin"])).key
        caller = (await store.create(["predict"], models=[MODEL])).key
        stranger = (await store.create(["predict"], models=["another-model"])).key
        feedback_only = (await store.create(["feedback"])).key
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            pushed = await http.post(
                "/v1/admin/packages",
                content=package,
                headers={**bearer(admin), "content-type": "application/octet-stream"},
            )
            assert pushed.status_code == 201, pushed.text
            cache = app.state.gateway.samples
            yield Rig(http, cache, admin, caller, stranger, feedback_only)


async def test_samples_are_the_packages_first_rows_and_predict_as_they_are(
    tmp_path: Path, server: ServerProcess, demo_packages: dict[str, Path]
) -> None:
    samples = read_package(demo_packages[MODEL]).samples.inputs["pixels"]
    async with gateway(tmp_path, server, demo_packages[MODEL].read_bytes()) as rig:
        read = await rig.http.get(f"/v1/models/{MODEL}/samples", headers=bearer(rig.caller))
        assert read.status_code == 200, read.text
        answer = read.json()
        assert (answer["model"], answer["version"], answer["rows"]) == (MODEL, "1", 3)
        assert answer["instances"] == samples[:3].tolist()
        assert answer["inputs"] == {"pixels": samples[:3].tolist()}

        for body in ({"instances": answer["instances"]}, {"inputs": answer["inputs"]}):
            predicted = await rig.http.post(
                f"/v1/models/{MODEL}:predict", json=body, headers=bearer(rig.caller)
            )
            assert predicted.status_code == 200, predicted.text
            assert predicted.json()["model_version"] == "1"

        one = await rig.http.get(f"/v1/models/{MODEL}/samples?rows=1&version=1", headers=bearer(rig.admin))
        assert (one.status_code, one.json()["rows"], len(one.json()["instances"])) == (200, 1, 1)
        most = await rig.http.get(f"/v1/models/{MODEL}/samples?rows={MAX_ROWS}", headers=bearer(rig.admin))
        assert most.json()["rows"] == min(MAX_ROWS, len(samples))


async def test_the_package_is_read_once_per_version(
    tmp_path: Path, server: ServerProcess, demo_packages: dict[str, Path]
) -> None:
    async with gateway(tmp_path, server, demo_packages[MODEL].read_bytes()) as rig:
        for rows in (1, 2, 5, 2):
            read = await rig.http.get(f"/v1/models/{MODEL}/samples?rows={rows}", headers=bearer(rig.caller))
            assert read.json()["rows"] == rows
        assert rig.cache.reads == 1


async def test_bad_rows_unknown_versions_and_other_keys_are_refused_clearly(
    tmp_path: Path, server: ServerProcess, demo_packages: dict[str, Path]
) -> None:
    async with gateway(tmp_path, server, demo_packages[MODEL].read_bytes()) as rig:
        path = f"/v1/models/{MODEL}/samples"
        for rows in ("0", str(MAX_ROWS + 1), "three", "9" * 5000):
            bad = await rig.http.get(f"{path}?rows={rows}", headers=bearer(rig.caller))
            assert bad.status_code == 400, bad.text
            assert f"'rows' must be a whole number from 1 to {MAX_ROWS}" in bad.json()["error"]
        no_version = await rig.http.get(f"{path}?version=7", headers=bearer(rig.caller))
        assert no_version.status_code == 404
        assert "has no live version '7'" in no_version.json()["error"]
        no_model = await rig.http.get("/v1/models/nope/samples", headers=bearer(rig.admin))
        assert no_model.status_code == 404
        assert "nope" in no_model.json()["error"]
        for key in (rig.stranger, rig.feedback_only):
            refused = await rig.http.get(path, headers=bearer(key))
            assert refused.status_code == 403, refused.text
        assert (await rig.http.get(path)).status_code == 401
        assert rig.cache.reads == 0


def test_large_rows_are_fewer_but_never_none() -> None:
    images = {"image": np.zeros((16, 3, 224, 224), np.float32)}  # 150,528 values a row
    assert rows_that_fit(images, 16) == MAX_VALUES // (3 * 224 * 224) == 6
    huge = {"volume": np.zeros((2, 2_000_000), np.uint8), "flag": np.zeros((2,), np.bool_)}
    assert rows_that_fit(huge, 3) == 1
    assert rows_that_fit({"pixels": np.zeros((4, 64), np.float32)}, 16) == 4
