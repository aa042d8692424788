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
cost one merge per interval, however many are open. :meth:`SeriesStore.glance` sums the last few
minutes of the 10 s buckets into one request rate, p99 and error rate per model and version (the
console's models page).

Memory stays bounded as versions come and go: every ``sweep_s`` the store drops the series of a
version that took nothing for a whole day, and of one no longer served (absent from ``served()``
at two sweeps in a row, so a reload in progress keeps its history), once its buckets are published.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel

from core.errors import InvalidInput
from core.tasks import cancelled
from gateway.drift.shared import Published, SharedBuckets, flush_and_publish
from gateway.drift.windows import Window, duration_s
from modelpkg.reference import SKETCH_K

log = logging.getLogger(__name__)

RESOLUTIONS: dict[str, Window] = {
    "1h": Window("series-1h", 3600, 10),
    "24h": Window("series-24h", 86_400, 60),
}
"""Window asked for → its buckets; the names never match a drift window's (``^[0-9]+[smhd]$``)."""

MAX_PENDING = 100_000
"""Latencies per version waiting for a flush; past it requests are still counted, not sketched."""

GLANCE_WINDOW = "5m"
"""The span :meth:`SeriesStore.glance` sums by default."""


def glance_window(name: str) -> Window:
    """``5m`` → the last five minutes of the hour's 10 s buckets: the same window name, so that
    other processes' published buckets are fetched as the hour's, back to the span only."""
    hour = RESOLUTIONS["1h"]
    span = duration_s(name) or 0
    if not hour.bucket_s * 6 <= span <= hour.span_s or span % hour.bucket_s:
        raise InvalidInput(
            f"window must last 1m to 1h in whole {hour.bucket_s} s steps, such as 5m or 300s, not {name!r}"
        )
    return Window(hour.name, span, hour.bucket_s)


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

    def idle(self, now: int) -> bool:
        """Whether nothing was recorded within the day: its newest bucket left the 24 h window."""
        day = self.levels["24h"]
        return not day or not RESOLUTIONS["24h"].holds(day[-1].start, now)

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


class VersionGlance(BaseModel):
    """One version's traffic over the glance window, summed over every gateway process."""

    version: str
    requests_per_s: float
    p99_ms: float | None
    """Null without requests in the window."""
    error_rate: float | None
    """Share of the requests that failed on the server side (5xx); null without requests."""


class ModelGlance(BaseModel):
    """A model's traffic over the glance window: all its versions together, then each."""

    model: str
    requests_per_s: float
    p99_ms: float | None
    error_rate: float | None
    versions: list[VersionGlance]


class GlanceAnswer(BaseModel):
    window: str
    window_s: int
    """The span summed, in seconds, ending now (its last 10 s bucket is still filling)."""
    models: list[ModelGlance]


def _versions_in_order(versions: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(versions), key=lambda v: (len(v), v)))  # 2 before 10


class SeriesStore:
    def __init__(
        self,
        shared: SharedBuckets | None = None,
        *,
        flush_s: float = 0.5,
        publish_s: float = 2.0,
        cache_s: float = 2.0,
        sweep_s: float = 60.0,
        served: Callable[[], Iterable[tuple[str, str]]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``served``: the (model, version) pairs loaded now; without it only idleness drops series."""
        self._shared = shared
        self._flush_s = flush_s
        self._publish_s = publish_s
        self._cache_s = cache_s
        self._sweep_s = sweep_s
        self._served = served
        self._clock = clock
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._arms: dict[tuple[str, str], _Arm] = {}
        self._absent: set[tuple[str, str]] = set()
        """Versions not served at the last sweep: dropped if still not served at the next."""
        self._answers: dict[tuple[str, str, tuple[str, ...]], tuple[float, SeriesAnswer]] = {}
        self._glances: dict[tuple[str, int, tuple[str, ...]], tuple[float, ModelGlance]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        """How many versions' series this process keeps in memory."""
        return len(self._arms)

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
        if self._shared is None:  # nobody to tell: forget what changed, so that it does not pile up
            for arm in self._arms.values():
                arm.changed.clear()
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
        wanted = _versions_in_order(versions)
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

    async def glance(self, served: Mapping[str, Iterable[str]], window: str = GLANCE_WINDOW) -> GlanceAnswer:
        """Request rate, p99 and error rate over the last ``window`` (1m to 1h) of each model in
        ``served`` (model → its versions), over every gateway process's traffic. Each model's
        answer is cached for ``cache_s``, whichever keys ask."""
        span = glance_window(window)
        now = self._clock()
        self._glances = {k: v for k, v in self._glances.items() if now - v[0] < self._cache_s}
        flushed = False
        models = []
        for model, versions in served.items():
            key = (model, span.span_s, _versions_in_order(versions))
            cached = self._glances.get(key)
            if cached is None:
                if not flushed:
                    self.flush()
                    flushed = True
                cached = self._glances[key] = (now, await self._model_glance(model, key[2], span, now))
            models.append(cached[1])
        return GlanceAnswer(window=window, window_s=span.span_s, models=models)

    def sweep(self) -> None:
        """Drop the series of versions idle for a day, or no longer served, whose buckets are
        published (the background task calls it every ``sweep_s``)."""
        now = int(self._clock())
        absent: set[tuple[str, str]] = set()
        if self._served is not None:
            served = set(self._served())
            absent = {key for key in self._arms if key not in served}
        for key, arm in list(self._arms.items()):
            if arm.changed:
                continue
            if arm.idle(now) or (key in absent and key in self._absent):
                del self._arms[key]
        self._absent = absent

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

    async def _published(self, model: str, version: str, window: Window) -> list[SeriesBucket]:
        """The other processes' buckets of ``window`` (its name's resolution, back to its span)."""
        published: list[SeriesBucket] = []
        if self._shared is not None:
            for raw in await self._shared.fetch(model, version, window):
                try:
                    published.append(SeriesBucket.from_bytes(raw))
                except (ValueError, KeyError, TypeError) as error:
                    log.warning("published series bucket of %s version %s skipped: %s", model, version, error)
        return published

    async def _model_glance(
        self, model: str, versions: tuple[str, ...], span: Window, now: float
    ) -> ModelGlance:
        first = span.bucket_start(int(now)) - span.span_s + span.bucket_s
        seconds = max(now - first, 1.0)  # the last bucket counts as far as it has filled
        total = SeriesBucket(first)
        glances = []
        for version in versions:
            arm = self._arms.get((model, version))
            summed = SeriesBucket(first)
            for bucket in reversed(arm.levels["1h"]) if arm is not None else ():  # newest first
                if bucket.start < first:
                    break
                summed.merge(bucket)
            for bucket in await self._published(model, version, span):
                if bucket.start >= first:
                    summed.merge(bucket)
            total.merge(summed)
            rate, p99, error_rate = _glance_numbers(summed, seconds)
            glances.append(
                VersionGlance(version=version, requests_per_s=rate, p99_ms=p99, error_rate=error_rate)
            )
        rate, p99, error_rate = _glance_numbers(total, seconds)
        return ModelGlance(
            model=model, requests_per_s=rate, p99_ms=p99, error_rate=error_rate, versions=glances
        )

    async def _version(
        self, model: str, version: str, window: str, resolution: Window, starts: list[int]
    ) -> VersionSeries:
        merged: dict[int, SeriesBucket] = {}
        arm = self._arms.get((model, version))
        own = list(arm.levels[window]) if arm is not None else []
        published = await self._published(model, version, resolution)
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
        swept = self._clock()

        async def flush() -> None:
            self.flush()

        async def publish() -> None:
            nonlocal swept
            await self.publish()
            if self._clock() - swept >= self._sweep_s:  # after a publish: the buckets are out
                swept = self._clock()
                self.sweep()

        await flush_and_publish(flush, publish, self._flush_s, self._publish_s, "series buckets")


def _glance_numbers(bucket: SeriesBucket, seconds: float) -> tuple[float, float | None, float | None]:
    """(requests/s, p99 ms, error rate) of what ``bucket`` summed over ``seconds``."""
    sketch = bucket.latency_ms
    p99 = round(float(sketch.get_quantile(0.99)), 3) if sketch is not None and not sketch.is_empty() else None
    error_rate = round(bucket.errors / bucket.requests, 4) if bucket.requests else None
    return round(bucket.requests / seconds, 6), p99, error_rate
