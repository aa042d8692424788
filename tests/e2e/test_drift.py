"""Drift with real processes: a package with a reference profile, in-distribution traffic, a shift."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from core.server_process import ServerProcess, start_server_process
from examples.digits import LABELS, load_data, train_sklearn
from gateway.process import GatewayProcess, start_gateway_process
from modelpkg import build
from tests.e2e.conftest import run_cli
from tests.modelpkg.zips import rewritten

MODEL = "drifting-digits"
OLD = "old-digits"
SHIFTED = 36  # a pixel in the middle of the digits
ENV = {"MDEPLOY_DRIFT_SAMPLE_RATE": "1.0", "MDEPLOY_RATE_LIMIT_PREDICT": "1000000/minute"}


@dataclass
class Watched:
    gateway: GatewayProcess
    rows: np.ndarray

    def send(self, rows: np.ndarray, model: str = MODEL) -> None:
        headers = {"Authorization": f"Bearer {self.gateway.admin_key}"}
        with httpx.Client(base_url=self.gateway.url, headers=headers, timeout=30) as client:
            for first in range(0, rows.shape[0], 10):
                body = {"instances": rows[first : first + 10].tolist()}
                answer = client.post(f"/v1/models/{model}:predict", json=body)
                assert answer.status_code == 200, answer.text

    def drift(self, *args: str) -> dict[str, Any]:
        shown = run_cli(self.gateway, "drift", *args, "--json")
        assert shown.returncode == 0, shown.stderr
        report: dict[str, Any] = json.loads(shown.stdout)
        return report


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    folder = tmp_path_factory.mktemp("drift")
    data = load_data()
    options: dict[str, Any] = {
        "samples": data.x_test[:8],
        "input_names": ["pixels"],
        "output_names": ["label", "probabilities"],
        "labels": LABELS,
        "labels_output": "probabilities",
        "code_dir": None,
    }
    model = train_sklearn(data)
    package = build(model, folder / "digits.pkg", name=MODEL, reference=data.x_train, **options).path
    old = build(model, folder / "new-old.pkg", name=OLD, **options).path
    stripped = rewritten(old, folder / "old.pkg", keep_reference=False)
    server: ServerProcess = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    gateway = start_gateway_process(folder / "gateway", [server.address], env=ENV)
    try:
        for path in (package, stripped):
            assert run_cli(gateway, "push", str(path)).returncode == 0
        yield Watched(gateway, data.x_test)
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)


def test_in_distribution_traffic_scores_low_and_a_shifted_feature_is_flagged_first(watched: Watched) -> None:
    assert watched.drift(MODEL, "--window", "5m")["status"] == "no traffic"
    watched.send(watched.rows)
    calm = watched.drift(MODEL, "--window", "5m")
    assert calm["status"] == "ok", [(f["name"], f["psi"], f["ks"]) for f in calm["features"][:3]]
    assert calm["rows"] == watched.rows.shape[0]
    assert calm["score"] < 0.1
    assert calm["classes_js"] < 0.1
    assert (calm["reference_source"], calm["reference_rows"]) == ("reference", 1347)

    shifted = watched.rows.copy()
    shifted[:, SHIFTED] += 3 * watched.rows[:, SHIFTED].std()
    watched.send(shifted)
    moved = watched.drift(MODEL, "--window", "5m")
    assert moved["status"] == "drift"
    first = moved["features"][0]
    assert (first["name"], first["side"], first["drifted"]) == (f"pixels[{SHIFTED}]", "input", True)
    assert moved["rows"] == 2 * watched.rows.shape[0]
    table = run_cli(watched.gateway, "drift", MODEL, "--window", "5m")
    assert f"pixels[{SHIFTED}]" in table.stdout
    assert "DRIFT" in table.stdout


def test_a_package_without_a_profile_reports_no_reference(watched: Watched) -> None:
    watched.send(watched.rows[:20], model=OLD)
    report = watched.drift(OLD)
    assert report["status"] == "no reference"
    assert "no reference profile" in run_cli(watched.gateway, "drift", OLD).stdout


def test_drift_needs_a_known_model_version_and_window(watched: Watched) -> None:
    unknown = run_cli(watched.gateway, "drift", "no-such-model")
    assert unknown.returncode == 1
    assert "no-such-model" in unknown.stderr
    missing = run_cli(watched.gateway, "drift", MODEL, "--version", "7")
    assert missing.returncode == 1
    assert "no live version '7'" in missing.stderr


def test_an_evaluation_set_is_not_counted_as_live_traffic(watched: Watched, tmp_path: Path) -> None:
    before = watched.drift(MODEL, "--window", "5m")["rows"]
    data = tmp_path / "eval.npz"
    np.savez(data, pixels=watched.rows[:100])
    answer = httpx.post(
        f"{watched.gateway.url}/v1/admin/models/{MODEL}/versions/1/evaluations",
        content=data.read_bytes(),
        headers={
            "Authorization": f"Bearer {watched.gateway.admin_key}",
            "Content-Type": "application/octet-stream",
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == 100
    assert watched.drift(MODEL, "--window", "5m")["rows"] == before
