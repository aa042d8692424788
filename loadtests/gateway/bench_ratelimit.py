"""What one rate-limit count costs the prediction path, per storage (why ``LoopCounters`` exists).

Each row counts one request and reads where the key stands, as the gateway does per request:
limits' sliding-window-counter strategy on limits' own ``MemoryStorage`` (what slowapi builds for
``memory://``), the same through the slowapi Limiter, and ``LoopCounters.hit_with_stats`` (what
slowapi builds for ``mdeploy-loop://``, the gateway's ``memory://``). The ratio column is each
row's cost over LoopCounters', measured in this run. Run:

    python -m loadtests.gateway.bench_ratelimit [--hits 200000]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

import limits
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from rich.console import Console
from slowapi import Limiter

from gateway.auth.loop_counters import LoopCounters
from loadtests.common.tables import table

_ITEM = limits.parse("1000000000/minute")  # never refused: every hit costs the same


def per_hit_us(count: Callable[[], object], hits: int) -> float:
    started = time.perf_counter()
    for _ in range(hits):
        count()
    return (time.perf_counter() - started) / hits * 1e6


def limits_memory() -> Callable[[], object]:
    strategy = SlidingWindowCounterRateLimiter(MemoryStorage())
    return lambda: (strategy.hit(_ITEM, "key", "predict"), strategy.get_window_stats(_ITEM, "key", "predict"))


def slowapi_memory() -> Callable[[], object]:
    strategy = Limiter(
        key_func=lambda: "key", storage_uri="memory://", strategy="sliding-window-counter"
    ).limiter
    return lambda: (strategy.hit(_ITEM, "key", "predict"), strategy.get_window_stats(_ITEM, "key", "predict"))


def loop_counters() -> Callable[[], object]:
    counters, key, expiry = LoopCounters(), _ITEM.key_for("key", "predict"), _ITEM.get_expiry()
    return lambda: counters.hit_with_stats(key, _ITEM.amount, expiry)


class TimerStarts:
    """Counts the ``threading.Timer`` threads started while it is entered (limits' memory
    storage starts one every 10 ms to expire counters)."""

    def __init__(self) -> None:
        self.count = 0
        self._start = threading.Timer.start

    def __enter__(self) -> TimerStarts:
        start = self._start

        def counting(timer: threading.Thread) -> None:
            self.count += 1
            start(timer)

        threading.Timer.start = counting  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        threading.Timer.start = self._start  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=200_000, help="counts per row (default 200000)")
    hits = parser.parse_args().hits
    with TimerStarts() as timers:
        started = time.perf_counter()
        rows = {
            "limits MemoryStorage + strategy": per_hit_us(limits_memory(), hits),
            "slowapi Limiter, memory://": per_hit_us(slowapi_memory(), hits),
        }
        memory_s = time.perf_counter() - started
    rows["LoopCounters.hit_with_stats"] = per_hit_us(loop_counters(), hits)
    baseline = rows["LoopCounters.hit_with_stats"]
    shown = table(
        f"one rate-limit count and read, {hits} hits per row", ("storage", "µs/hit", "x LoopCounters"), 1
    )
    for name, cost in rows.items():
        shown.add_row(name, f"{cost:.2f}", f"{cost / baseline:.1f}")
    console = Console()
    console.print(shown)
    console.print(f"timer threads limits' MemoryStorage started in its {memory_s:.1f} s: {timers.count}")


if __name__ == "__main__":
    main()
