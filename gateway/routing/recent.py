"""Requests per version over the last minute, counted by this gateway process.

One ring of one-second buckets per (model, version): counting is an index and an add on the
request path, and reading sums at most ``seconds`` buckets.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class _Ring:
    __slots__ = ("counts", "stamps")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.stamps = [-1] * size  # the second each bucket counts


class RecentCounts:
    def __init__(self, seconds: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._rings: dict[tuple[str, str], _Ring] = {}

    def add(self, model: str, version: str) -> None:
        ring = self._rings.get((model, version))
        if ring is None:
            ring = self._rings[(model, version)] = _Ring(self.seconds)
        second = int(self._clock())
        slot = second % self.seconds
        if ring.stamps[slot] != second:
            ring.stamps[slot], ring.counts[slot] = second, 0
        ring.counts[slot] += 1

    def total(self, model: str, version: str) -> int:
        """Requests counted in the last ``seconds`` seconds (the current one included)."""
        ring = self._rings.get((model, version))
        if ring is None:
            return 0
        oldest = int(self._clock()) - self.seconds
        return sum(n for n, stamp in zip(ring.counts, ring.stamps, strict=True) if stamp > oldest)

    def forget(self, model: str) -> None:
        for key in [key for key in self._rings if key[0] == model]:
            del self._rings[key]
