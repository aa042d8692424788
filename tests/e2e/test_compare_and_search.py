"""`mdeploy compare` and `mdeploy search` against a real gateway and inference server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest

from core.server_process import ServerProcess, start_server_process
from examples.digits import load_data
from examples.onnx_models import mlp
from gateway.process import GatewayProcess, start_gateway_process
from tests.e2e.conftest import run_cli
from tests.e2e.digit_variants import digits_package
from tests.e2e.test_end_to_end import create_key

MODEL = "compared-digits"
OTHER = "other-model"


@dataclass
class Fleet:
    gateway: GatewayProcess
    folder: Path
    data_hash: str
    local: Path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("compare")
    data = load_data()
    np.savez(folder / "eval.npz", pixels=data.x_test)
    np.save(folder / "y.npy", data.y_test)
    train = folder / "digits-train.npy"
    np.save(train, data.x_train)
    good = digits_package(folder, MODEL, "good", 1000, 1.0, tags=["handwriting", "demo"], data_files=[train])
    weak = digits_package(folder, MODEL, "weak", 2, 0.01, tags=["handwriting"])
    other = digits_package(folder, OTHER, "other", 1000, 1.0, tags=["secret-project"])
    local = digits_package(folder, MODEL, "candidate", 1000, 0.3)
    server: ServerProcess = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    gateway = start_gateway_process(folder / "gateway", [server.address])
    try:
        for package in (good, weak, other):
            assert run_cli(gateway, "push", str(package)).returncode == 0
        yield Fleet(gateway, folder, hashlib.sha256(train.read_bytes()).hexdigest(), local)
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)


def search(fleet: Fleet, *args: str, key: str | None = None) -> list[dict[str, Any]]:
    found = run_cli(fleet.gateway, "search", *args, "--json", api_key=key)
    assert found.returncode == 0, found.stderr
    models: list[dict[str, Any]] = json.loads(found.stdout)
    return models


def test_search_finds_a_model_by_tag_input_name_and_data_hash(fleet: Fleet) -> None:
    by_tag = search(fleet, "handwriting")
    assert {m["name"] for m in by_tag} == {MODEL}
    (model,) = by_tag
    assert [(m["version"], m["role"]) for m in model["matches"]] == [("1", "live"), ("2", "staged")]
    assert {m["name"] for m in search(fleet, "--input", "pixels")} == {MODEL, OTHER}
    by_data = search(fleet, "--data-sha256", fleet.data_hash[:16])
    assert [(m["name"], [v["version"] for v in m["matches"]]) for m in by_data] == [(MODEL, ["1"])]
    assert search(fleet, "handwriting", "--framework", "keras") == []
    table = run_cli(fleet.gateway, "search", "demo handwriting")
    assert "good · sklearn · pixels[-1, 64] · tags handwriting,demo" in " ".join(table.stdout.split())


def test_search_never_shows_a_model_outside_the_keys_list(fleet: Fleet) -> None:
    limited = create_key(fleet.gateway, "predict", models=[MODEL])
    assert {m["name"] for m in search(fleet, "--input", "pixels", key=limited)} == {MODEL}
    assert search(fleet, "secret-project", key=limited) == []
    assert {m["name"] for m in search(fleet, "secret-project")} == {OTHER}  # the admin key sees it
    bad = run_cli(fleet.gateway, "search", "--data-sha256", "xyz")
    assert bad.returncode != 0
    assert "hex digits" in bad.stderr


def test_compare_prints_static_measured_and_local_figures(fleet: Fleet) -> None:
    data, labels = str(fleet.folder / "eval.npz"), str(fleet.folder / "y.npy")
    args = ("compare", f"{MODEL}:1", f"{MODEL}:2", str(fleet.local), "--data", data, "--labels", labels)
    compared = run_cli(fleet.gateway, *args, "--json")
    assert compared.returncode == 0, compared.stderr
    versions = json.loads(compared.stdout)["versions"]
    first, weak, local = versions
    assert [v["source"] for v in versions] == [
        "gateway",
        "gateway",
        "local package (onnxruntime in this process)",
    ]
    assert first["measured"]["accuracy"] > 0.9 > weak["measured"]["accuracy"]
    assert weak["measured"]["agreement"] < 0.9 < local["measured"]["agreement"]
    for version in versions:
        assert version["measured"]["p99_ms"] >= version["measured"]["p50_ms"] > 0
        assert version["measured"]["rows_per_s"] > 0
        assert version["measured"]["logloss"] > 0
    assert first["live"]["role"] == "live"
    assert first["manifest"]["provenance"]["data"][0]["sha256"] == fleet.data_hash
    shown = run_cli(fleet.gateway, *args)
    assert shown.returncode == 0, shown.stderr
    for expected in (
        "From the packages",
        "Measured on eval.npz with y.npy",
        "accuracy",
        "agreement",
        "parity",
    ):
        assert expected in shown.stdout
    assert "onnxruntime in" in shown.stdout


def test_compare_refuses_what_it_cannot_compare(fleet: Fleet) -> None:
    alone = run_cli(fleet.gateway, "compare", f"{MODEL}:1")
    assert alone.returncode == 2
    assert "2 to 8 references" in alone.stderr
    missing = run_cli(fleet.gateway, "compare", f"{MODEL}:1", f"{MODEL}:9")
    assert missing.returncode == 1
    assert "no version 9" in missing.stderr


def test_a_float_and_a_quantised_version_are_arms_and_compare_shows_the_trade(
    fleet: Fleet, tmp_path: Path
) -> None:
    rows = np.random.default_rng(5).standard_normal((64, 256)).astype(np.float32)
    np.save(tmp_path / "x.npy", rows)
    onnx.save(mlp([256, 512, 10], seed=2), tmp_path / "mlp.onnx")
    common = [
        "package",
        str(tmp_path / "mlp.onnx"),
        "--name",
        "mlp-q",
        "--samples",
        str(tmp_path / "x.npy"),
        "-q",
    ]
    assert run_cli(fleet.gateway, *common, "-o", str(tmp_path / "float.pkg")).returncode == 0
    quantized = run_cli(fleet.gateway, *common, "--quantize", "dynamic", "-o", str(tmp_path / "int8.pkg"))
    assert quantized.returncode == 0, quantized.stderr
    for name in ("float", "int8"):
        assert run_cli(fleet.gateway, "push", str(tmp_path / f"{name}.pkg")).returncode == 0
    started = run_cli(fleet.gateway, "rollout", "mlp-q", "--policy", "epsilon-greedy", "--versions", "1,2")
    assert started.returncode == 0, started.stderr
    headers = {"Authorization": f"Bearer {fleet.gateway.admin_key}"}
    with httpx.Client(base_url=fleet.gateway.url, headers=headers, timeout=30) as client:
        answers = [
            client.post("/v1/models/mlp-q:predict", json={"instances": [rows[i].tolist()]}) for i in range(40)
        ]
    assert {a.status_code for a in answers} == {200}
    assert {a.headers["x-model-version"] for a in answers} == {"1", "2"}  # both arms answer

    args = ("compare", "mlp-q:1", "mlp-q:2", "--data", str(tmp_path / "x.npy"), "--json")
    compared = run_cli(fleet.gateway, *args)
    assert compared.returncode == 0, compared.stderr
    float_version, int8 = json.loads(compared.stdout)["versions"]
    assert int8["size"] < 0.5 * float_version["size"]
    assert int8["manifest"]["optimization"]["quantization"] == "dynamic"
    assert (
        int8["manifest"]["provenance"]["parent_digest"]
        == int8["manifest"]["optimization"]["float_model_sha256"]
    )
    assert {"p50_ms", "rows_per_s"} <= set(int8["measured"])
    assert int8["live"]["role"] == "candidate"
