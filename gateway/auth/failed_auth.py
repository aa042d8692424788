"""Floods of bad keys: failed authentications counted per client address, in this process.

Counters are per address (unlike rate limits, which are per key: a request without a valid key
has no key to count against). An address past ``limit`` failures in ``window_s`` is blocked for
the rest of that window: its requests are answered 429 (RESOURCE_EXHAUSTED) at once, without a
key-store lookup, unless they carry a key this process has already verified and remembers, so a
valid client behind the same NAT as a flood keeps working. Valid keys from other addresses are
never touched: their requests pass the remembered-key check as before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

_MAX_ADDRESSES = (
    100_000  # past this the counts start again: a flood from many addresses costs memory only up to here
)


@dataclass(slots=True)
class _Window:
    started: float
    failures: int


class FailedAuthentications:
    """Failures per client address in fixed windows of ``window_s`` (see the module docstring)."""

    def __init__(
        self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def blocked_for(self, address: str | None) -> int | None:
        """Whole seconds until ``address`` may try again; None when it is not blocked."""
        if address is None:
            return None
        window = self._windows.get(address)
        if window is None or window.failures < self.limit:
            return None
        left = window.started + self.window_s - self._clock()
        if left <= 0:
            del self._windows[address]
            return None
        return max(1, math.ceil(left))

    def failed(self, address: str | None) -> None:
        if address is None:
            return
        now = self._clock()
        window = self._windows.get(address)
        if window is None or now >= window.started + self.window_s:
            if len(self._windows) >= _MAX_ADDRESSES:
                self._windows.clear()
            self._windows[address] = _Window(now, 1)
        else:
            window.failures += 1
