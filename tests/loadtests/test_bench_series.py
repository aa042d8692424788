"""The time series benchmark runs and prints the request path's cost and each window's read."""

from __future__ import annotations

import pytest

from loadtests.gateway.bench_series import main


def test_the_benchmark_prints_the_request_path_and_each_windows_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--requests", "640", "--reads", "1", "--models", "2"]) == 0
    printed = capsys.readouterr().out
    assert "record µs/request" in printed
    for window in ("1h", "24h"):
        assert f"{window} │" in printed
    assert "CPU µs per glance" in printed
