"""Prometheus metrics of one gateway process, served at ``/metrics``.

Counters and histograms are updated on the request path; queue lengths, batches in flight
and backend health are read when Prometheus scrapes, so they cost nothing in between.
Each app has its own registry, so several apps can live in one process (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.backends import BackendPool
from gateway.dataplane import BatcherStats

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._request_children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}
        self.requests = Counter(
            "mdeploy_requests",
            "Prediction requests by model, version, route and HTTP status",
            ["model", "version", "route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mdeploy_request_seconds",
            "Prediction latency inside the gateway",
            ["model", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
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

        self.routed = Counter(
            "mdeploy_routed_requests",
            "Requests whose version a deployment policy chose, per version",
            ["model", "version"],
            registry=self.registry,
        )

    def observe_request(self, model: str, version: str, route: str, code: int, seconds: float) -> None:
        """Count a prediction request and its latency (label children kept: ``labels()`` is slow)."""
        key = (model, version, route, code)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(model, version, route, str(code)),
                self.latency.labels(model, route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch(
        self,
        pool: BackendPool,
        batchers: Callable[[], list[BatcherStats]],
        shares: Callable[[], dict[tuple[str, str], float]] = dict,
    ) -> None:
        self.registry.register(_LiveState(pool, batchers, shares))
