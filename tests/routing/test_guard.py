"""The rollout guard's verdicts on error rate and p99 latency."""

from __future__ import annotations

from gateway.routing.guard import GuardSpec, GuardWindows

SPEC = GuardSpec(min_requests=50, max_error_rate_delta=0.05, max_p99_ratio=2.0, min_p99_delta_ms=1.0)


def _record(
    windows: GuardWindows, version: str, count: int, fail_every: int = 0, latency_s: float = 0.001
) -> None:
    for i in range(count):
        windows.record(version, not (fail_every and i % fail_every == 0), latency_s)


def test_a_candidate_failing_30_percent_is_judged_after_min_requests() -> None:
    windows = GuardWindows(SPEC.window)
    _record(windows, "1", 100)
    for i in range(49):
        windows.record("2", i % 10 >= 3, 0.001)
    assert windows.verdict("1", "2", SPEC) is None  # too young to judge
    windows.record("2", True, 0.001)
    verdict = windows.verdict("1", "2", SPEC)
    assert verdict is not None
    assert "failed 30.0% of its last 50 requests against 0.0%" in verdict.reason


def test_errors_within_the_allowed_delta_of_the_baseline_pass() -> None:
    windows = GuardWindows(SPEC.window)
    _record(windows, "1", 200, fail_every=10)
    _record(windows, "2", 200, fail_every=8)  # 12.5% against 10%
    assert windows.verdict("1", "2", SPEC) is None


def test_slow_candidate_is_judged_on_p99_against_the_baseline() -> None:
    windows = GuardWindows(SPEC.window)
    _record(windows, "1", 100, latency_s=0.002)
    _record(windows, "2", 100, latency_s=0.010)
    verdict = windows.verdict("1", "2", SPEC)
    assert verdict is not None
    assert "p99 latency 10.0 ms" in verdict.reason
    assert windows.verdict("1", "2", SPEC.model_copy(update={"enabled": False})) is None


def test_sub_millisecond_jitter_is_not_a_regression() -> None:
    windows = GuardWindows(SPEC.window)
    _record(windows, "1", 100, latency_s=0.0002)
    _record(windows, "2", 100, latency_s=0.0009)  # 4.5x, but 0.7 ms
    assert windows.verdict("1", "2", SPEC) is None


def test_the_window_keeps_only_recent_outcomes() -> None:
    windows = GuardWindows(100)
    _record(windows, "2", 100, fail_every=1)
    _record(windows, "2", 100)
    summary = windows.summary("2")
    assert (summary.requests, summary.error_rate) == (100, 0.0)
