"""Per (model, version) time series at bounded resolution, merged over every gateway process.

Two resolutions: 10 s buckets for the last hour (360) and 1 min buckets for the last day (1440).
A bucket holds the requests that reached the version, those that failed on the server side, a
KLL sketch of their latency in ms (mergeable across processes without losing its error bound),
and the sum and count of feedback rewards.

On the request path :meth:`SeriesStore.record` costs a dict lookup and an append (about a µs);
every ``flush_s`` a background task adds each version's pending latencies to its sketches in one
batch per bucket, and every ``publish_s`` hands the buckets that changed to the other processes
through the drift monitor's shared buckets (``gateway.drift.shared``: the gateway database, or
Redis with ``shared_state_url``), under window names of their own (``series-1h``,
``series-24h``) so that they expire with their resolution's span. A read merges this process's
buckets with the others' published ones, and is cached for ``cache_s`` so that consoles polling
cost one merge per interval, however many are open.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel

from core.errors import InvalidInput
from core.tasks import cancelled
from gateway.drift.shared import Published, SharedBuckets, flush_and_publish
from gateway.drift.windows import Window
from modelpkg.reference import SKETCH_K

log = logging.getLogger(__name__)

RESOLUTIONS: dict[str, Window] = {
    "1h": Window("series-1h", 3600, 10),
    "24h": Window("series-24h", 86_400, 60),
}
"""Window asked for → its buckets; the names never match a drift window's (``^[0-9]+[smhd]$``)."""

MAX_PENDING = 100_000
"""Latencies per version waiting for a flush; past it requests are still counted, not sketched."""


def _sketch() -> Any:
    from datasketches import kll_floats_sketch  # type: ignore[import-untyped]  # no stubs

    return kll_floats_sketch(SKETCH_K)


def _sketch_of(raw: bytes) -> Any:
    from datasketches import kll_floats_sketch

    return kll_floats_sketch.deserialize(raw)


@dataclass(slots=True)
class SeriesBucket:
    start: int
    requests: int = 0
    errors: int = 0
    latency_ms: Any = None
    """kll_floats_sketch, or None before the bucket's first request."""
    reward_sum: float = 0.0
    rewards: int = 0

    def to_bytes(self) -> bytes:
        latency = base64.b64encode(self.latency_ms.serialize()).decode() if self.latency_ms else None
        return orjson.dumps(
            {
                "start": self.start,
                "requests": self.requests,
                "errors": self.errors,
                "latency_ms": latency,
                "reward_sum": self.reward_sum,
                "rewards": self.rewards,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> SeriesBucket:
        data = orjson.loads(raw)
        latency = data["latency_ms"]
        return cls(
            int(data["start"]),
            int(data["requests"]),
            int(data["errors"]),
            _sketch_of(base64.b64decode(latency)) if latency else None,
            float(data["reward_sum"]),
            int(data["rewards"]),
        )

    def merge(self, other: SeriesBucket) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.reward_sum += other.reward_sum
        self.rewards += other.rewards
        if other.latency_ms is not None:
            if self.latency_ms is None:
                self.latency_ms = _sketch()
            self.latency_ms.merge(other.latency_ms)


@dataclass(slots=True)
class _Pending:
    """What a version's requests and rewards added since the last flush."""

    requests: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    reward_sum: float = 0.0
    rewards: int = 0


class _Arm:
    """One version's buckets, per resolution, oldest first."""

    def __init__(self) -> None:
        self.levels: dict[str, deque[SeriesBucket]] = {name: deque() for name in RESOLUTIONS}
        self.changed: set[tuple[str, int]] = set()

    def add(self, pending: _Pending, now: int) -> None:
        latencies = (
            np.asarray(pending.latencies_s, dtype=np.float32) * np.float32(1000.0)
            if pending.latencies_s
            else None
        )
        for name, window in RESOLUTIONS.items():
            bucket = self._current(name, window, now)
            self.changed.add((name, bucket.start))
            bucket.requests += pending.requests
            bucket.errors += pending.errors
            bucket.reward_sum += pending.reward_sum
            bucket.rewards += pending.rewards
            if latencies is not None:
                if bucket.latency_ms is None:
                    bucket.latency_ms = _sketch()
                bucket.latency_ms.update(latencies)

    def take_changed(self) -> list[tuple[str, SeriesBucket]]:
        changed = [
            (name, bucket)
            for name, buckets in self.levels.items()
            for bucket in buckets
            if (name, bucket.start) in self.changed
        ]
        self.changed.clear()
        return changed

    def _current(self, name: str, window: Window, now: int) -> SeriesBucket:
        buckets = self.levels[name]
        start = window.bucket_start(now)
        while buckets and not window.holds(buckets[0].start, now):
            buckets.popleft()
        if not buckets or buckets[-1].start != start:
            buckets.append(SeriesBucket(start))
        return buckets[-1]


class VersionSeries(BaseModel):
    """One version's series, an entry per bucket of ``starts``; null where the bucket has no data."""

    version: str
    requests_per_s: list[float]
    errors_per_s: list[float]
    """Requests that failed on the server side (5xx), per second."""
    p50_ms: list[float | None]
    p99_ms: list[float | None]
    """Latency inside the gateway's data plane (queue, batch, inference server)."""
    reward_mean: list[float | None]
    """Mean feedback reward of the requests answered in the bucket that got one."""


class SeriesAnswer(BaseModel):
    model: str
    window: str
    resolution_s: int
    starts: list[int]
    """Each bucket's start, Unix seconds, oldest first; the last bucket is still filling."""
    versions: list[VersionSeries]


class SeriesStore:
    def __init__(
        self,
        shared: SharedBuckets | None = None,
        *,
        flush_s: float = 0.5,
        publish_s: float = 2.0,
        cache_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._shared = shared
        self._flush_s = flush_s
        self._publish_s = publish_s
        self._cache_s = cache_s
        self._clock = clock
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._arms: dict[tuple[str, str], _Arm] = {}
        self._answers: dict[tuple[str, str, tuple[str, ...]], tuple[float, SeriesAnswer]] = {}
        self._task: asyncio.Task[None] | None = None

    def record(self, model: str, version: str, ok: bool, latency_s: float) -> None:
        """On the request path: a request that ``version`` answered (``ok``) or failed."""
        pending = self._pending.get((model, version))
        if pending is None:
            pending = self._pending[(model, version)] = _Pending()
        pending.requests += 1
        if not ok:
            pending.errors += 1
        if len(pending.latencies_s) < MAX_PENDING:
            pending.latencies_s.append(latency_s)

    def reward(self, model: str, version: str, reward: float) -> None:
        """A feedback reward for a request ``version`` answered."""
        pending = self._pending.get((model, version))
        if pending is None:
            pending = self._pending[(model, version)] = _Pending()
        pending.reward_sum += reward
        pending.rewards += 1

    def flush(self) -> None:
        """Add what is pending to the current buckets: one sketch update per version and resolution."""
        pending, self._pending = self._pending, {}
        now = int(self._clock())
        for key, added in pending.items():
            arm = self._arms.get(key)
            if arm is None:
                arm = self._arms[key] = _Arm()
            arm.add(added, now)

    async def publish(self) -> None:
        """Hand the buckets that changed since last time to the other gateway processes."""
        if self._shared is None:
            return
        changed = [
            Published(model, version, RESOLUTIONS[name], bucket.start, bucket.to_bytes())
            for (model, version), arm in self._arms.items()
            for name, bucket in arm.take_changed()
        ]
        if changed:
            await self._shared.publish(changed)

    async def series(self, model: str, versions: Iterable[str], window: str) -> SeriesAnswer:
        """``model``'s series over ``window`` (1h or 24h) for ``versions``, over every gateway
        process's traffic."""
        resolution = RESOLUTIONS.get(window)
        if resolution is None:
            raise InvalidInput(f"window must be one of {', '.join(RESOLUTIONS)}, not {window!r}")
        wanted = tuple(sorted(set(versions), key=lambda v: (len(v), v)))  # 2 before 10
        key = (model, window, wanted)
        cached = self._answers.get(key)
        now = self._clock()
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        self.flush()
        newest = resolution.bucket_start(int(now))
        count = resolution.span_s // resolution.bucket_s
        starts = list(range(newest - (count - 1) * resolution.bucket_s, newest + 1, resolution.bucket_s))
        answer = SeriesAnswer(
            model=model,
            window=window,
            resolution_s=resolution.bucket_s,
            starts=starts,
            versions=[await self._version(model, version, window, resolution, starts) for version in wanted],
        )
        self._answers = {k: v for k, v in self._answers.items() if now - v[0] < self._cache_s}
        self._answers[key] = (now, answer)
        return answer

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="series-flush")

    async def close(self) -> None:
        await cancelled(self._task)
        try:  # what this process saw last still counts in the others' series
            self.flush()
            await self.publish()
        except Exception:
            log.exception("series buckets not published at shutdown")
        self._arms.clear()  # C++ sketches: freed with the app, not at interpreter exit
        self._answers.clear()

    async def _version(
        self, model: str, version: str, window: str, resolution: Window, starts: list[int]
    ) -> VersionSeries:
        merged: dict[int, SeriesBucket] = {}
        arm = self._arms.get((model, version))
        own = list(arm.levels[window]) if arm is not None else []
        published: list[SeriesBucket] = []
        if self._shared is not None:
            for raw in await self._shared.fetch(model, version, resolution):
                try:
                    published.append(SeriesBucket.from_bytes(raw))
                except (ValueError, KeyError, TypeError) as error:
                    log.warning("published series bucket of %s version %s skipped: %s", model, version, error)
        first = starts[0]
        for bucket in (*own, *published):
            if bucket.start < first:
                continue
            into = merged.get(bucket.start)
            if into is None:
                into = merged[bucket.start] = SeriesBucket(bucket.start)
            into.merge(bucket)
        span = float(resolution.bucket_s)
        requests: list[float] = []
        errors: list[float] = []
        p50: list[float | None] = []
        p99: list[float | None] = []
        rewards: list[float | None] = []
        for start in starts:
            found = merged.get(start)
            if found is None:
                requests.append(0.0)
                errors.append(0.0)
                p50.append(None)
                p99.append(None)
                rewards.append(None)
                continue
            requests.append(found.requests / span)
            errors.append(found.errors / span)
            if found.latency_ms is not None and not found.latency_ms.is_empty():
                low, high = found.latency_ms.get_quantiles([0.5, 0.99])
                p50.append(round(float(low), 3))
                p99.append(round(float(high), 3))
            else:
                p50.append(None)
                p99.append(None)
            rewards.append(found.reward_sum / found.rewards if found.rewards else None)
        return VersionSeries(
            version=version,
            requests_per_s=requests,
            errors_per_s=errors,
            p50_ms=p50,
            p99_ms=p99,
            reward_mean=rewards,
        )

    async def _run(self) -> None:
        async def flush() -> None:
            self.flush()

        await flush_and_publish(flush, self.publish, self._flush_s, self._publish_s, "series buckets")
