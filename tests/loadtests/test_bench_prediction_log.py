"""The prediction log benchmark runs and prints a row per sample rate."""

from __future__ import annotations

import pytest

from loadtests.gateway.bench_prediction_log import main


def test_the_benchmark_prints_the_cost_of_each_sample_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--requests", "640", "--flush", "128"]) == 0
    printed = capsys.readouterr().out
    for rate in ("off", "0.05", "0.2", "1 "):
        assert f"│ {rate}" in printed
