"""Release gates with real processes: a push is evaluated through the serving path and promoted
only when every gate passes; a failing gate leaves it staged and `mdeploy push` exits non-zero."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from core.server_process import ServerProcess, start_server_process
from examples.digits import load_data
from gateway.process import GatewayProcess, start_gateway_process
from tests.e2e.conftest import run_cli
from tests.e2e.digit_variants import digits_package

MODEL = "gated-digits"


def _package(folder: Path, name: str, rows_per_class: int, c: float) -> Path:
    return digits_package(folder, MODEL, name, rows_per_class, c)


ENV = {"MDEPLOY_RATE_LIMIT_PREDICT": "1000000/minute", "MDEPLOY_RATE_LIMIT_ADMIN": "1000000/minute"}


@dataclass
class Gated:
    gateway: GatewayProcess
    eval_set: Path
    labels: Path
    packages: dict[str, Path]

    def live(self) -> str | None:
        listed = json.loads(run_cli(self.gateway, "list", "--json").stdout)
        (model,) = [m for m in listed if m["name"] == MODEL]
        live: str | None = model["default_version"]
        return live

    def answering(self) -> set[str]:
        headers = {"Authorization": f"Bearer {self.gateway.admin_key}"}
        rows = {"instances": [[0.0] * 64]}
        with httpx.Client(base_url=self.gateway.url, headers=headers, timeout=30) as client:
            return {
                client.post(f"/v1/models/{MODEL}:predict", json=rows).headers["x-model-version"]
                for _ in range(20)
            }


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gated]:
    folder = tmp_path_factory.mktemp("gates")
    data = load_data()
    eval_set, labels = folder / "eval.npz", folder / "y.npy"
    np.savez(eval_set, pixels=data.x_test)
    np.save(labels, data.y_test)
    packages = {
        "good": _package(folder, "good", 1000, 1.0),
        "weak": _package(folder, "weak", 2, 0.01),
        "retrained": _package(folder, "retrained", 1000, 0.5),
        "also-good": _package(folder, "also-good", 1000, 2.0),
        "also-weak": _package(folder, "also-weak", 3, 0.01),
    }
    server: ServerProcess = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    gateway = start_gateway_process(folder / "gateway", [server.address], env=ENV)
    try:
        assert run_cli(gateway, "push", str(packages["good"])).returncode == 0
        yield Gated(gateway, eval_set, labels, packages)
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)


def gated_push(gated: Gated, arm: str, *gates: str) -> tuple[int, str, dict[str, Any]]:
    """Push ``arm`` with the evaluation set and ``gates``: exit code, what it printed, and the
    version as `mdeploy info` shows it afterwards."""
    package = gated.packages[arm]
    args = ["push", str(package), "--eval", str(gated.eval_set), "--labels", str(gated.labels)]
    for gate in gates:
        args += ["--gate", gate]
    shown = run_cli(gated.gateway, *args)
    digest = hashlib.sha256(package.read_bytes()).hexdigest()
    model = json.loads(run_cli(gated.gateway, "info", MODEL, "--json").stdout)
    (version,) = [v for v in model["versions"] if v["digest"] == digest]
    detail = json.loads(run_cli(gated.gateway, "info", f"{MODEL}:{version['version']}", "--json").stdout)
    return shown.returncode, shown.stdout + shown.stderr, detail


def test_a_failing_gate_leaves_the_version_staged_and_exits_non_zero(gated: Gated) -> None:
    code, printed, answer = gated_push(gated, "weak", "accuracy>=0.95", "p99_ms<=5000")
    assert code == 1, printed
    assert "FAIL: accuracy" in printed
    assert "stays staged" in printed
    assert answer["role"] == "staged"
    assert gated.live() == "1"
    assert gated.answering() == {"1"}
    latest = answer["evaluations"][0]
    assert latest["passed"] is False
    assert latest["metrics"]["accuracy"] < 0.95
    assert latest["metrics"]["agreement"] < 1.0  # measured against the live version 1
    assert latest["against"] == "1"


def test_passing_gates_promote_and_record_the_measurements(gated: Gated) -> None:
    gates = ("accuracy>=0.9", "agreement>=0.9", "logloss<=0.5", "p99_ms<=5000", "rows_per_s>=10")
    code, printed, answer = gated_push(gated, "retrained", *gates)
    assert code == 0, printed
    assert "every gate passed; promoted" in printed
    version = str(answer["version"])
    assert gated.live() == version
    assert gated.answering() == {version}
    evaluation = answer["evaluations"][0]
    assert evaluation["promoted"] is True
    assert evaluation["rows"] == 450
    assert {g["gate"] for g in evaluation["gates"]} == set(gates)
    history = json.loads(run_cli(gated.gateway, "history", MODEL, "--kind", "evaluate", "--json").stdout)
    assert history[0]["to"] == "passed and promoted"
    assert run_cli(gated.gateway, "rollback", MODEL).returncode == 0  # a gated promotion is undone too
    assert gated.live() == "1"


def test_default_gates_judge_every_push(gated: Gated) -> None:
    args = ["--eval", str(gated.eval_set), "--labels", str(gated.labels), "--gate", "accuracy>=0.93"]
    assert run_cli(gated.gateway, "gates", "set", MODEL, *args, "--auto-promote").returncode == 0
    shown = run_cli(gated.gateway, "gates", "show", MODEL)
    assert "accuracy>=0.93" in shown.stdout
    assert "goes live" in shown.stdout

    passed = run_cli(gated.gateway, "push", str(gated.packages["also-good"]))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "promoted" in passed.stdout
    promoted = gated.live()
    failed = run_cli(gated.gateway, "push", str(gated.packages["also-weak"]))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "stays staged" in failed.stdout
    assert gated.live() == promoted
    assert run_cli(gated.gateway, "gates", "clear", MODEL).returncode == 0
    assert run_cli(gated.gateway, "gates", "show", MODEL).returncode == 1


def test_bad_gates_and_evaluation_sets_are_refused_with_what_to_fix(gated: Gated, tmp_path: Path) -> None:
    typo = run_cli(
        gated.gateway,
        "push",
        str(gated.packages["good"]),
        "--eval",
        str(gated.eval_set),
        "--gate",
        "acuracy>=1",
    )
    assert typo.returncode == 2
    assert "unknown metric 'acuracy'" in typo.stderr
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, image=np.zeros((3, 64), np.float32))
    headers = {
        "Authorization": f"Bearer {gated.gateway.admin_key}",
        "Content-Type": "application/octet-stream",
    }
    answer = httpx.post(
        f"{gated.gateway.url}/v1/admin/models/{MODEL}/versions/1/evaluations",
        content=wrong.read_bytes(),
        headers=headers,
        timeout=60,
    )
    assert answer.status_code == 400
    assert "takes inputs ['pixels']" in answer.json()["error"]
    garbage = httpx.post(
        f"{gated.gateway.url}/v1/admin/models/{MODEL}/versions/1/evaluations",
        content=b"not an npz",
        headers=headers,
        timeout=60,
    )
    assert garbage.status_code == 400
    assert "not a readable .npz" in garbage.json()["error"]
