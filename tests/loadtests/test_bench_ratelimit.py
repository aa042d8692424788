"""The rate-limit benchmark runs and counts what it says it counts."""

from __future__ import annotations

import threading

from loadtests.gateway.bench_ratelimit import TimerStarts, limits_memory, loop_counters, per_hit_us


def test_every_row_counts_and_costs_something() -> None:
    for count in (limits_memory(), loop_counters()):
        assert per_hit_us(count, 100) > 0


def test_timer_starts_counts_the_timers_limits_memory_storage_starts() -> None:
    with TimerStarts() as timers:
        threading.Timer(0, lambda: None).start()
    assert timers.count == 1
    assert threading.Timer.start is threading.Thread.start  # put back on exit
