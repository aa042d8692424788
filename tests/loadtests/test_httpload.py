"""Benchmark rounds merge into the distribution of all their requests."""

from __future__ import annotations

import numpy as np
import pytest

from loadtests.gateway.httpload import HttpResult, combined

# The grid wrk_post.lua prints: every percent, then tenths up to 99.9, then the maximum.
GRID = [*range(1, 100), *(round(99.1 + 0.1 * i, 1) for i in range(9)), 100]


def round_of(latencies_ms: np.ndarray, cpu_s: float) -> HttpResult:
    quantiles = tuple((float(p), float(np.percentile(latencies_ms, p))) for p in GRID)
    return HttpResult(
        "gateway", 64, 2.0, len(latencies_ms), 1, 0.0, 0.0, 0.0, float(latencies_ms.max()), 0.5,
        (cpu_s,), 0.1, quantiles,
    )  # fmt: skip


def test_merged_percentiles_are_those_of_all_requests_together() -> None:
    rng = np.random.default_rng(5)
    quick = rng.gamma(4.0, 1.0, 20_000)
    stalled = rng.gamma(4.0, 1.0, 10_000) * 3  # one round in a slow phase of the machine
    merged = combined([round_of(quick, 1.0), round_of(stalled, 2.0)])
    everything = np.concatenate([quick, stalled])
    for percent, value in ((50, merged.p50_ms), (90, merged.p90_ms), (99, merged.p99_ms)):
        assert value == pytest.approx(np.percentile(everything, percent), rel=0.02)
    assert merged.p99_ms < float(np.percentile(stalled, 99))  # not just the worst round's
    assert (merged.requests, merged.errors, merged.window_s) == (30_000, 2, 4.0)
    assert merged.pid_cpu_s == (3.0,)
    assert merged.max_ms == pytest.approx(float(everything.max()))
