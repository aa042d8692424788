"""The locustfile drives any pushed model: here both demo models, from their packages' samples."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loadtests.common.paths import ROOT

pytestmark = pytest.mark.e2e


def test_run_locust_sends_every_format_to_both_models_without_a_failure() -> None:
    command = [sys.executable, "-m", "loadtests.locust.run_locust", "--run-time", "4", "--users", "4"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for kind in ("v1 instances", "v1 inputs", "v2 infer"):
        line = next(line for line in output.splitlines() if line.startswith(f"POST     {kind}"))
        assert " 0(0.00%)" in line, line
