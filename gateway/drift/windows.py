"""The time windows drift is reported over, and the buckets each is kept in.

A window is named by its span (``5m``, ``1h``, ``24h``; the gateway's ``drift_windows``
setting lists them) and kept as ten buckets of a tenth of its span, so a window forgets its
oldest tenth at a time: the 5-minute window moves in 30 s steps, the day in 2.4 h steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import InvalidInput

BUCKETS_PER_WINDOW = 10
DEFAULT_WINDOWS = ("5m", "1h", "24h")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"^([1-9][0-9]{0,5})([smhd])$")


@dataclass(frozen=True)
class Window:
    name: str
    span_s: int
    bucket_s: int

    def bucket_start(self, now: int) -> int:
        return now - now % self.bucket_s

    def holds(self, bucket_start: int, now: int) -> bool:
        """Whether a bucket that began at ``bucket_start`` still overlaps the window ending now."""
        return bucket_start + self.bucket_s > now - self.span_s


def duration_s(name: str) -> int | None:
    """``5m`` → 300; None when ``name`` is not a number and a unit (s, m, h or d)."""
    match = _DURATION.match(name)
    return int(match.group(1)) * _UNITS[match.group(2)] if match else None


def window_of(name: str) -> Window:
    """``5m`` → a five-minute window in 30 s buckets; InvalidInput names the form."""
    span = duration_s(name)
    if span is None:
        raise InvalidInput(
            f"a drift window is a number and a unit (s, m, h or d), such as 5m or 24h, not {name!r}"
        )
    if span < BUCKETS_PER_WINDOW or span > 30 * 86_400:
        raise InvalidInput(f"a drift window lasts 10 s to 30 d, not {name!r}")
    return Window(name, span, span // BUCKETS_PER_WINDOW)


def windows_of(names: list[str] | tuple[str, ...]) -> dict[str, Window]:
    windows = {name: window_of(name) for name in names}
    if not windows:
        raise InvalidInput("drift needs at least one window")
    return dict(sorted(windows.items(), key=lambda item: item[1].span_s))
