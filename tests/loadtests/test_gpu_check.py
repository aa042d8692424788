"""The prepared GPU check: its CPU dry run passes here, as it must before it meets a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtests.server import gpu_bundle, gpu_check
from servers import runtime

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "loadtests" / "gpu_check.sh"


def run_check(out: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = subprocess.run(
        ["bash", str(SCRIPT), *flags, "--quick", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHON": sys.executable},
    )
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() else {}
    return done, report


def test_cpu_dry_run_checks_and_measures_every_step(tmp_path: Path) -> None:
    done, report = run_check(tmp_path, "--cpu-dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Result: PASS" in done.stdout
    assert (tmp_path / "gpu_check.txt").read_text().strip() in done.stdout
    mlp = next(c for c in report["checks"] if c["model"] == "mlp")
    assert mlp["provider"] == "CPUExecutionProvider" == mlp["expected_provider"]
    assert mlp["max_abs_error"] <= gpu_check.TOLERANCE * mlp["max_abs_reference"]
    loads = {(r["model"], r["rows_per_request"], r["in_flight"]) for r in report["server"]}
    assert {("mlp", 1, 1), ("mlp", 1, 64), ("mlp", 32, 1), ("mlp", 256, 1)} <= loads
    assert all(r["errors"] == 0 and r["rows_per_s"] > 0 for r in report["server"])
    batches = {(r["provider"], r["batch"]) for r in report["in_process"] if r["model"] == "mlp"}
    assert batches == {("cpu", 1), ("cpu", 32), ("cpu", 256)}
    assert [r["batch"] for r in report["sweep"]] == list(gpu_check.SWEEP)
    assert {r["batch"] for r in report["io_binding"]} == {32, 256}


def test_unknown_option_is_refused_with_the_usage(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), "--gpu", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "unknown option --gpu" in done.stderr
    assert "--cpu-dry-run" in done.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not runtime.cuda_available(), reason="onnxruntime has no CUDAExecutionProvider here")
def test_gpu_check_passes_on_cuda(tmp_path: Path) -> None:
    done, report = run_check(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert all(c["provider"] == "CUDAExecutionProvider" for c in report["checks"])


def test_bundle_parts_join_back_to_the_wheel_and_its_digest(tmp_path: Path) -> None:
    wheel = tmp_path / "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(os.urandom(2500))
    parts = gpu_bundle.split(wheel, tmp_path, part_bytes=1024)
    assert [p.name for p in parts] == ["ort-part-00", "ort-part-01", "ort-part-02"]
    assert max(p.stat().st_size for p in parts) == 1024
    joined = tmp_path / "joined" / wheel.name
    joined.parent.mkdir()
    joined.write_bytes(b"".join(p.read_bytes() for p in sorted(tmp_path.glob("ort-part-*"))))
    (tmp_path / "joined" / "ort.sha256").write_text((tmp_path / "ort.sha256").read_text())
    check = subprocess.run(
        ["sha256sum", "-c", "ort.sha256"], cwd=joined.parent, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
