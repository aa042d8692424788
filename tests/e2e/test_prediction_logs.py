"""Prediction logs with real processes: enable, predict, feed back, export through the CLI; and a
folder that is full or cannot be written never costs a prediction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from core.server_process import ServerProcess, start_server_process
from examples.digits import LABELS, load_data, train_sklearn
from gateway.process import GatewayProcess, start_gateway_process
from modelpkg import build
from tests.e2e.conftest import run_cli

LOGGED = "logged-digits"
CAPPED = "capped-digits"
BLOCKED = "blocked-digits"
ENV = {"MDEPLOY_RATE_LIMIT_PREDICT": "1000000/minute", "MDEPLOY_RATE_LIMIT_FEEDBACK": "1000000/minute"}


@dataclass
class Logged:
    gateway: GatewayProcess
    rows: np.ndarray
    http: httpx.Client

    def predict(self, model: str, rows: np.ndarray) -> str:
        """The request id of a routed prediction (no version named) of ``rows``."""
        answer = self.http.post(f"/v1/models/{model}:predict", json={"instances": rows.tolist()})
        assert answer.status_code == 200, answer.text
        return answer.headers["x-request-id"]

    def cli(self, *args: str) -> str:
        shown = run_cli(self.gateway, "logs", *args)
        assert shown.returncode == 0, shown.stderr
        return shown.stdout

    def status(self, model: str) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.cli("status", model, "--json"))
        return status

    def metric(self, name: str, **labels: str) -> float:
        wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    folder = tmp_path_factory.mktemp("logs")
    data = load_data()
    model = train_sklearn(data)
    options: dict[str, Any] = {
        "samples": data.x_test[:8],
        "input_names": ["pixels"],
        "output_names": ["label", "probabilities"],
        "labels": LABELS,
        "labels_output": "probabilities",
        "code_dir": None,
    }
    packages = [
        build(model, folder / f"{name}.pkg", name=name, **options).path for name in (LOGGED, CAPPED, BLOCKED)
    ]
    server: ServerProcess = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    gateway = start_gateway_process(folder / "gateway", [server.address], env=ENV)
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    try:
        for package in packages:
            assert run_cli(gateway, "push", str(package)).returncode == 0
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=60) as http:
            yield Logged(gateway, data.x_test, http)
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)


def test_the_export_holds_the_logged_rows_with_their_rewards(logged: Logged, tmp_path: Path) -> None:
    assert not logged.status(LOGGED)["enabled"]
    logged.predict(LOGGED, logged.rows[:2])  # off by default: not logged
    assert "logging 100% of answered requests" in logged.cli(
        "enable", LOGGED, "--sample", "1", "--max-mb", "64"
    )
    sent: dict[str, np.ndarray] = {}
    for first in range(0, 90, 3):
        sent[logged.predict(LOGGED, logged.rows[first : first + 3])] = logged.rows[first : first + 3]
    rewards = {request_id: i / 10 for i, request_id in enumerate(list(sent)[:10])}
    for request_id, reward in rewards.items():
        answer = logged.http.post(
            f"/v1/models/{LOGGED}/feedback", json={"request_id": request_id, "reward": reward}
        )
        assert answer.status_code == 200, answer.text

    output = tmp_path / "data.parquet"
    printed = logged.cli("export", LOGGED, "--since", "1h", "-o", str(output))
    assert "90 rows (30 with a reward)" in printed
    table = pq.read_table(output)
    assert table.num_rows == 90
    assert set(table["model"].to_pylist()) == {LOGGED}
    assert set(table["version"].to_pylist()) == {"1"}
    by_request: dict[str, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        by_request.setdefault(row["request_id"], []).append(row)
    assert set(by_request) == set(sent)
    for request_id, rows in by_request.items():
        assert [row["row"] for row in rows] == [0, 1, 2]
        np.testing.assert_array_equal(np.array([row["input.pixels"] for row in rows]), sent[request_id])
        assert all(abs(sum(row["output.probabilities"]) - 1) < 1e-4 for row in rows)
        assert {row["reward"] for row in rows} == {rewards.get(request_id)}
    assert json.loads(table.schema.metadata[b"mdeploy.shapes"])["input.pixels"] == [64]

    status = logged.status(LOGGED)
    assert (status["enabled"], status["sample_rate"], status["max_mb"]) == (True, 1.0, 64)
    assert (status["rows"], status["rewards"]) == (90, 10)
    audit = logged.http.get("/v1/admin/audit", params={"model": LOGGED, "action": "logs-enable"}).json()
    assert [event["to"] for event in audit["events"]] == ["sample 1, cap 64 MiB"]

    logged.cli("disable", LOGGED, "--purge")
    assert logged.status(LOGGED)["files"] == 0
    assert not (logged.gateway.data_dir / "prediction-logs" / LOGGED).exists()


def test_a_full_log_folder_rotates_and_one_that_cannot_be_written_drops_but_every_prediction_answers(
    logged: Logged,
) -> None:
    blocked = logged.gateway.data_dir / "prediction-logs" / BLOCKED
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("a file where the log folder should be: every write fails")
    logged.cli("enable", CAPPED, "--max-mb", "1")
    logged.cli("enable", BLOCKED)
    random = np.random.default_rng(0)
    for _ in range(10):
        for _ in range(20):  # noise compresses badly: 20 requests make a file of about 300 kB
            logged.predict(CAPPED, random.standard_normal((64, 64)).astype(np.float32))  # 200, checked
        logged.predict(BLOCKED, logged.rows[:5])
        # An export writes this gateway's queue first: one file per round.
        for model in (CAPPED, BLOCKED):
            exported = logged.http.get(f"/v1/admin/models/{model}/logs/export", params={"since": "0.001"})
            assert exported.status_code == 200, exported.text

    capped = logged.status(CAPPED)
    assert 0 < capped["bytes"] <= 2**20
    assert 0 < capped["rows"] < 200 * 64
    assert logged.metric("mdeploy_prediction_log_rotated_files_total", model=CAPPED) > 0
    assert logged.metric("mdeploy_prediction_log_rows_total", model=CAPPED, kind="predictions") == 200 * 64
    assert logged.metric("mdeploy_prediction_log_dropped_total", model=BLOCKED, reason="write_error") == 50
    assert logged.status(BLOCKED)["files"] == 0
    assert blocked.is_file()
