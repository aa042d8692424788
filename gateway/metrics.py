"""Prometheus metrics of one gateway process, served at ``/metrics``.

Counters and histograms are updated on the request path; queue lengths, batches in flight
and backend health are read when Prometheus scrapes, so they cost nothing in between.
Each app has its own registry, so several apps can live in one process (tests).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.backends import BackendPool
from gateway.dataplane import BatcherStats
from gateway.drift.watch import VersionScore

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _LiveState(Collector):
    def __init__(
        self,
        pool: BackendPool,
        batchers: Callable[[], list[BatcherStats]],
        shares: Callable[[], dict[tuple[str, str], float]],
    ) -> None:
        self._pool = pool
        self._batchers = batchers
        self._shares = shares

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "mdeploy_backend_up", "1 when the inference server passes its health check", labels=["address"]
        )
        in_flight = GaugeMetricFamily(
            "mdeploy_backend_in_flight", "Requests in flight per inference server", labels=["address"]
        )
        for backend in self._pool.backends:
            up.add_metric([backend.address], 1.0 if backend.healthy else 0.0)
            in_flight.add_metric([backend.address], backend.in_flight)
        queue = GaugeMetricFamily(
            "mdeploy_queue_length", "Requests waiting for a batch", labels=["model", "version"]
        )
        batches = GaugeMetricFamily(
            "mdeploy_batches_in_flight", "Backend calls in flight", labels=["model", "version"]
        )
        for stats in self._batchers():
            queue.add_metric([stats.model, stats.version], stats.queue_length)
            batches.add_metric([stats.model, stats.version], stats.batches_in_flight)
        share = GaugeMetricFamily(
            "mdeploy_traffic_share",
            "Share of a model's routed requests per version since its deployment last changed",
            labels=["model", "version"],
        )
        for (model, version), value in self._shares().items():
            share.add_metric([model, version], value)
        yield from (up, in_flight, queue, batches, share)


class _DriftScores(Collector):
    """The last drift scores ``gateway.drift.watch`` computed: one series per served version, and
    its most drifted features (at most ``TOP_FEATURES`` each), so labels stay bounded."""

    def __init__(self, scores: Callable[[], dict[tuple[str, str], VersionScore]]) -> None:
        self._scores = scores

    def collect(self) -> Iterable[Metric]:
        score = GaugeMetricFamily(
            "mdeploy_drift_score",
            "Drift of a version's live traffic from its reference: mean PSI of its features, shortest window",
            labels=["model", "version"],
        )
        feature = GaugeMetricFamily(
            "mdeploy_feature_drift",
            "PSI of a version's most drifted features, shortest window",
            labels=["model", "version", "feature"],
        )
        for (model, version), value in self._scores().items():
            score.add_metric([model, version], value.score)
            for name, psi in value.top_features:
                feature.add_metric([model, version, name], psi)
        yield from (score, feature)


class _RequestMetrics(Collector):
    """``mdeploy_requests`` (counter) and ``mdeploy_request_seconds`` (histogram), exposed as
    prometheus_client's own Counter and Histogram would expose them.

    They change on every prediction, on the event loop only, so they are plain counts: the
    library's metric objects take a lock per update and walk the buckets in Python (~1.8 µs per
    request for the pair, against ~0.5 µs here).
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str, int], list[float]] = {}  # labels → [count, created]
        # (model, route) → [count per bucket (the last is +Inf)..., sum of seconds]
        self._latency: dict[tuple[str, str], list[float]] = {}
        self._bounds = LATENCY_BUCKETS

    def observe(self, model: str, version: str, route: str, code: int, seconds: float) -> None:
        counted = self._counts.get((model, version, route, code))
        if counted is None:
            counted = self._counts[(model, version, route, code)] = [0, time.time()]
        counted[0] += 1
        latency = self._latency.get((model, route))
        if latency is None:
            latency = self._latency[(model, route)] = [0.0] * (len(self._bounds) + 2)
        latency[bisect_left(self._bounds, seconds)] += 1
        latency[-1] += seconds

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "mdeploy_requests",
            "Prediction requests by model, version, route and HTTP status",
            labels=["model", "version", "route", "code"],
        )
        for (model, version, route, code), (count, created) in list(self._counts.items()):
            requests.add_metric([model, version, route, str(code)], count, created=created)
        latency = HistogramMetricFamily(
            "mdeploy_request_seconds", "Prediction latency inside the gateway", labels=["model", "route"]
        )
        # Bounds written as prometheus_client writes them (the same as str() for these; tested).
        names = [str(bound) for bound in self._bounds] + ["+Inf"]
        for labels, values in list(self._latency.items()):
            cumulative, total = [], 0.0
            for name, count in zip(names, values[: len(names)], strict=True):
                total += count
                cumulative.append((name, total))
            latency.add_metric(list(labels), cumulative, sum_value=values[-1])
        yield from (requests, latency)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = _RequestMetrics()
        self.registry.register(self._requests)
        self.batch_rows = Histogram(
            "mdeploy_batch_rows",
            "Rows per backend call",
            ["model", "version"],
            buckets=_ROW_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "mdeploy_rate_limited", "Requests refused by a rate limit", ["scope"], registry=self.registry
        )
        self.rewards = Counter(
            "mdeploy_rewards",
            "Sum of feedback rewards per version",
            ["model", "version"],
            registry=self.registry,
        )
        self.rollbacks = Counter(
            "mdeploy_rollbacks",
            "Rollbacks by kind (manual or automatic)",
            ["model", "kind"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "mdeploy_shadow_requests",
            "Copies sent to shadow versions, by result (agree, differ, error)",
            ["model", "version", "result"],
            registry=self.registry,
        )
        self.drift_dropped = Counter(
            "mdeploy_drift_samples_dropped",
            "Sampled requests not sketched for drift because the sketching queue was full",
            registry=self.registry,
        )
        self.prediction_log_rows = Counter(
            "mdeploy_prediction_log_rows",
            "Prediction log rows written to Parquet files, by kind (predictions, rewards)",
            ["model", "kind"],
            registry=self.registry,
        )
        self.prediction_log_dropped = Counter(
            "mdeploy_prediction_log_dropped",
            "Prediction log rows dropped, by reason: queue_full (the writer is behind), write_error "
            "(the folder cannot be written, e.g. a full disk), over_cap (one file over the cap); "
            "reward_* for rewards",
            ["model", "reason"],
            registry=self.registry,
        )
        self.prediction_log_rotated = Counter(
            "mdeploy_prediction_log_rotated_files",
            "Prediction log files deleted, oldest first, to keep a model's folder under its cap",
            ["model"],
            registry=self.registry,
        )

        self.webhooks = Counter(
            "mdeploy_webhook_deliveries",
            "Webhook deliveries by result (delivered, refused, failed after retries, dropped)",
            ["result"],
            registry=self.registry,
        )
        self.routed = Counter(
            "mdeploy_routed_requests",
            "Requests whose version a deployment policy chose, per version",
            ["model", "version"],
            registry=self.registry,
        )

    def observe_request(self, model: str, version: str, route: str, code: int, seconds: float) -> None:
        """Count a prediction request (``mdeploy_requests``) and its latency (``mdeploy_request_seconds``)."""
        self._requests.observe(model, version, route, code, seconds)

    def watch(
        self,
        pool: BackendPool,
        batchers: Callable[[], list[BatcherStats]],
        shares: Callable[[], dict[tuple[str, str], float]] = dict,
    ) -> None:
        self.registry.register(_LiveState(pool, batchers, shares))

    def watch_drift(self, scores: Callable[[], dict[tuple[str, str], VersionScore]]) -> None:
        self.registry.register(_DriftScores(scores))
