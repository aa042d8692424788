"""The hostile package corpus pushed through the admin API of a real gateway process.

tests/modelpkg/test_reader_hostile.py checks the reader's refusals one by one, in process;
here every case of ``hostile_corpus.CORPUS`` travels as a raw HTTP upload to ``mdeploy serve``
(with a real inference server behind it), and each must be refused with a 4xx naming its
problem, while nothing is written outside the gateway's store, nothing is unpickled or
followed, the registry and its audit log stay as they were, and the gateway keeps serving.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.process import GatewayProcess, start_gateway_process
from tests.e2e.arms import GOOD, MODEL, build_arm_packages
from tests.e2e.hostile_corpus import CORPUS, UPLOAD_LIMIT, Base, Hostile

DATABASE = "registry.sqlite3"


@dataclass
class Stack:
    server: ServerProcess
    gateway: GatewayProcess
    http: httpx.Client
    base: Base
    registry: dict[str, Any]
    """GET /v1/admin/models?all=true and GET /v1/admin/audit after the one valid push."""
    tree: dict[str, int]


def data_tree(data_dir: Path) -> dict[str, int]:
    """Every file under the gateway's data folder with its size (the database's size varies)."""
    tree = {}
    for folder, _, names in os.walk(data_dir):
        for name in names:
            path = Path(folder, name)
            relative = str(path.relative_to(data_dir))
            tree[relative] = -1 if relative.startswith(DATABASE) else path.lstat().st_size
    return tree


def registry_state(http: httpx.Client) -> dict[str, Any]:
    models = http.get("/v1/admin/models", params={"all": "true"})
    audit = http.get("/v1/admin/audit", params={"limit": 1000})
    assert (models.status_code, audit.status_code) == (200, 200), (models.text, audit.text)
    return {"models": models.json(), "audit": audit.json()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    escape_dir = tmp_path_factory.mktemp("escape-target")
    base = Base(build_arm_packages(tmp_path_factory.mktemp("arms"))["a"], escape_dir)
    data_dir = tmp_path_factory.mktemp("hostile-gateway")
    server = start_server_process(
        ["--grpc-port", "0", "--grpc-address", "127.0.0.1", "--model-control-mode", "explicit"]
    )
    try:
        gateway = start_gateway_process(
            data_dir,
            [server.address],
            env={"MDEPLOY_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT), "MDEPLOY_RATE_LIMIT_ADMIN": "100000/minute"},
        )
        try:
            headers = {"Authorization": f"Bearer {gateway.admin_key}"}
            with httpx.Client(base_url=gateway.url, headers=headers, timeout=60) as http:
                pushed = http.post("/v1/admin/packages", content=base.path.read_bytes())
                assert pushed.status_code == 201, pushed.text
                yield Stack(server, gateway, http, base, registry_state(http), data_tree(data_dir))
        finally:
            gateway.stop(timeout_s=10)
    finally:
        server.stop(timeout_s=10)


def test_the_corpus_covers_every_listed_attack() -> None:
    names = {case.name for case in CORPUS}
    assert len(names) == len(CORPUS) == 29
    for attack in (
        "zip-slip",
        "absolute path",
        "symbolic link",
        "zip bomb",
        "duplicate entries",
        "tampered hash",
        "external data outside the package",
        "graph onnxruntime cannot load: unknown operator",
        "pickle disguised as model.onnx",
        "huge declared shapes in the manifest",
        "huge declared shapes in ONNX and manifest",
        "not a zip",
        "truncated zip",
        "empty body",
        "manifest nested 100,000 levels deep",
    ):
        assert attack in names


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_hostile_package_is_refused_and_changes_nothing(stack: Stack, case: Hostile) -> None:
    response = stack.http.post(
        "/v1/admin/packages",
        content=case.build(stack.base),
        headers={"Content-Type": "application/octet-stream"},
    )

    assert (response.status_code, case.problem in response.json()["error"]) == (case.status, True), (
        response.text
    )
    assert list(stack.base.escape_dir.iterdir()) == []  # nothing extracted, linked or unpickled
    assert data_tree(stack.gateway.data_dir) == stack.tree  # the upload is gone, nothing was added
    assert registry_state(stack.http) == stack.registry  # no version, no audit event
    prediction = stack.http.post(f"/v1/models/{MODEL}:predict", json={"instances": [GOOD]})
    assert (prediction.status_code, prediction.json()["predictions"]) == (200, [GOOD]), prediction.text
