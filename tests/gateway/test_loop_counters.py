"""LoopCounters: the gateway's in-process rate counters agree with limits' own strategy."""

from __future__ import annotations

import time

import limits
import pytest
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from gateway.auth.loop_counters import LoopCounters


def test_hit_with_stats_answers_as_limits_sliding_window_counter_does() -> None:
    item = limits.parse("5/hour")
    reference = SlidingWindowCounterRateLimiter(MemoryStorage())
    counters = LoopCounters()
    key = item.key_for("key-1", "predict")
    for _ in range(8):
        allowed = reference.hit(item, "key-1", "predict")
        stats = reference.get_window_stats(item, "key-1", "predict")
        ours = counters.hit_with_stats(key, item.amount, item.get_expiry())
        assert ours[:2] == (allowed, stats.remaining)
        assert ours[2] == pytest.approx(stats.reset_time, abs=0.5)
    assert counters.hit_with_stats(key, item.amount, item.get_expiry())[:2] == (False, 0)


def test_windows_roll_over_as_in_limits_own_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    # A made-up clock across five 10 s windows, hits at uneven gaps (some refused), so that the
    # previous window's weight, the shift to a new window and a skipped window all happen.
    clock = [1_800_000_003.25]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    item = limits.parse("6 per 10 seconds")
    storage = MemoryStorage()
    reference = SlidingWindowCounterRateLimiter(storage)
    counters = LoopCounters(sweep_interval_s=1.0)
    key = item.key_for("key-1", "predict")
    gaps = [0.1, 0.4, 0.2, 1.3, 0.05, 2.5, 0.7, 3.1, 0.3, 0.9, 4.4, 0.2, 12.5, 0.6, 1.1, 0.25, 6.0, 0.5]
    for step, gap in enumerate(gaps * 2):
        clock[0] += gap
        allowed = reference.hit(item, "key-1", "predict")
        stats = reference.get_window_stats(item, "key-1", "predict")
        ours = counters.hit_with_stats(key, item.amount, item.get_expiry())
        assert ours[:2] == (allowed, stats.remaining), f"step {step}"
        assert ours[2] == pytest.approx(stats.reset_time), f"step {step}"
        window = counters.get_sliding_window(key, item.get_expiry())
        assert window == pytest.approx(storage.get_sliding_window(key, item.get_expiry())), f"step {step}"
    clock[0] += 25.0  # both windows over: the sweep forgets the counter
    assert counters.hit_with_stats("other", 1, 60)[0]
    assert counters.reset() == 1


def test_limits_own_strategy_runs_on_loop_counters() -> None:
    item = limits.parse("3/minute")
    strategy = SlidingWindowCounterRateLimiter(LoopCounters())
    assert [strategy.hit(item, "k") for _ in range(4)] == [True, True, True, False]
    assert strategy.get_window_stats(item, "k").remaining == 0


def test_keys_and_scopes_are_counted_apart() -> None:
    counters = LoopCounters()
    assert counters.hit_with_stats("a/predict", 1, 60)[0]
    assert counters.hit_with_stats("b/predict", 1, 60)[0]
    assert counters.hit_with_stats("a/admin", 1, 60)[0]
    assert not counters.hit_with_stats("a/predict", 1, 60)[0]


def test_a_counter_expires_and_the_sweep_forgets_it() -> None:
    counters = LoopCounters(sweep_interval_s=0.0)
    assert counters.incr("k", expiry=0.05) == 1
    assert counters.get("k") == 1
    deadline = time.monotonic() + 5
    while counters.get("k") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    counters.incr("other", expiry=0.01)
    while counters.get("other") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert counters.reset() == 0  # nothing left behind
