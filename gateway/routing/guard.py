"""The rollout guard: is a candidate version worse than the stable one?

Each gateway process keeps, per version of a model under rollout, a window of its most recent
outcomes (success and latency). Once a candidate has ``min_requests`` of them, it fails the
guard when its error rate exceeds the stable version's by more than ``max_error_rate_delta``,
or when its p99 latency exceeds ``max_p99_ratio`` times the stable p99 (and by more than
``min_p99_delta_ms``, so that sub-millisecond jitter is not a regression). The latency check
needs ``min_requests`` of the stable version too; the error check does not (no baseline:
errors count against the candidate). Only server-side failures are errors: a bad request
says nothing about a version.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class GuardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    max_error_rate_delta: float = Field(default=0.05, ge=0.0, le=1.0)
    max_p99_ratio: float = Field(default=2.0, ge=1.0, le=1000.0)
    min_p99_delta_ms: float = Field(default=5.0, ge=0.0, le=600_000.0)
    min_requests: int = Field(default=100, ge=1, le=1_000_000)
    window: int = Field(default=1000, ge=10, le=100_000)
    """The most recent outcomes per version that the guard judges."""


@dataclass(frozen=True)
class Summary:
    requests: int
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Verdict:
    reason: str


LATENCY_EVERY = 100
"""Percentiles of two windows cost ~0.2 ms: the latency check runs every this many outcomes."""


class _Window:
    def __init__(self, size: int) -> None:
        self.failed: deque[bool] = deque(maxlen=size)
        self.latency_ms: deque[float] = deque(maxlen=size)
        self.failures = 0
        self.recorded = 0

    def add(self, ok: bool, latency_ms: float) -> None:
        if len(self.failed) == self.failed.maxlen and self.failed[0]:
            self.failures -= 1
        self.failed.append(not ok)
        self.failures += not ok
        self.latency_ms.append(latency_ms)
        self.recorded += 1

    @property
    def error_rate(self) -> float | None:
        return self.failures / len(self.failed) if self.failed else None

    def summary(self) -> Summary:
        n = len(self.failed)
        if n == 0:
            return Summary(0, None, None, None)
        p50, p99 = np.percentile(np.fromiter(self.latency_ms, float, n), [50, 99])
        return Summary(n, self.failures / n, float(p50), float(p99))


class GuardWindows:
    """Recent outcomes per version of one model (reset whenever its deployment changes)."""

    def __init__(self, size: int = 1000) -> None:
        self._size = size
        self._windows: dict[str, _Window] = {}

    def record(self, version: str, ok: bool, latency_s: float) -> None:
        window = self._windows.get(version)
        if window is None:
            window = self._windows[version] = _Window(self._size)
        window.add(ok, latency_s * 1000.0)

    def summary(self, version: str) -> Summary:
        window = self._windows.get(version)
        return window.summary() if window is not None else Summary(0, None, None, None)

    def verdict(self, stable: str, candidate: str, spec: GuardSpec) -> Verdict | None:
        """Why ``candidate`` must be rolled back, or None while it holds up (or is too young to judge)."""
        if not spec.enabled:
            return None
        window = self._windows.get(candidate)
        if window is None or window.error_rate is None or len(window.failed) < spec.min_requests:
            return None
        baseline = self._windows.get(stable)
        judged = baseline is not None and len(baseline.failed) >= spec.min_requests
        base_errors = baseline.error_rate if judged and baseline is not None else None
        if window.error_rate - (base_errors or 0.0) > spec.max_error_rate_delta:
            return Verdict(
                f"failed {window.error_rate:.1%} of its last {len(window.failed)} requests against "
                f"{base_errors or 0.0:.1%} for version {stable} (allowed: +{spec.max_error_rate_delta:.1%})"
            )
        if not judged or window.recorded % LATENCY_EVERY:
            return None
        mine, base = window.summary(), self.summary(stable)
        if mine.p99_ms is None or base.p99_ms is None:
            return None
        if (
            mine.p99_ms > spec.max_p99_ratio * base.p99_ms
            and mine.p99_ms - base.p99_ms > spec.min_p99_delta_ms
        ):
            return Verdict(
                f"p99 latency {mine.p99_ms:.1f} ms over its last {mine.requests} requests against "
                f"{base.p99_ms:.1f} ms for version {stable} (allowed: {spec.max_p99_ratio:g}x)"
            )
        return None
