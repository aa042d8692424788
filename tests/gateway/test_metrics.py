"""The gateway's per-request metrics read exactly as prometheus_client's own objects would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import LATENCY_BUCKETS, Metrics

# (model, version, route, code, seconds), with latencies on, between and past the bucket bounds.
OBSERVED = [
    ("digits", "1", "v1", 200, 0.0001),
    ("digits", "1", "v1", 200, 0.0025),
    ("digits", "1", "v1", 200, 0.0031),
    ("digits", "2", "v1", 200, 0.7),
    ("digits", "1", "v2", 200, 12.0),
    ("digits", "", "v1", 404, 0.00002),
    ("other", "3", "v2", 429, 0.01),
]


Line = tuple[str, tuple[tuple[str, str], ...], float]


def samples(registry: CollectorRegistry) -> set[Line]:
    """The exposed samples of the two request metrics, as (name, labels, value)."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if family.name in ("mdeploy_requests", "mdeploy_request_seconds") and not s.name.endswith("_created")
    }


def test_request_counts_and_latency_buckets_match_prometheus_client() -> None:
    reference = CollectorRegistry()
    requests = Counter(
        "mdeploy_requests", "requests", ["model", "version", "route", "code"], registry=reference
    )
    latency = Histogram(
        "mdeploy_request_seconds", "latency", ["model", "route"], buckets=LATENCY_BUCKETS, registry=reference
    )
    metrics = Metrics()
    for model, version, route, code, seconds in OBSERVED:
        requests.labels(model, version, route, str(code)).inc()
        latency.labels(model, route).observe(seconds)
        metrics.observe_request(model, version, route, code, seconds)
    ours, theirs = samples(metrics.registry), samples(reference)
    assert ours == theirs
    assert ("mdeploy_request_seconds_count", (("model", "digits"), ("route", "v1")), 5.0) in ours


def test_each_request_counter_says_when_it_was_created() -> None:
    metrics = Metrics()
    metrics.observe_request("digits", "1", "v1", 200, 0.001)
    assert 'mdeploy_requests_created{code="200",model="digits",route="v1",version="1"}' in (
        generate_latest(metrics.registry).decode()
    )
