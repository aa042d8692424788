"""Per-version time series: bucketing on a clock, and two gateway processes merging each other's
buckets through the gateway database (SQLite and a real PostgreSQL) and a real redis-server."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from gateway.drift.shared import DatabaseBuckets, RedisBuckets, SharedBuckets
from gateway.timeseries.series import SeriesBucket, SeriesStore
from tests.conftest import close_any, open_any
from tests.services import RedisServer

START = 1_800_000_000  # a multiple of 60: the 10 s and 1 min buckets start together


class Clock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


async def test_requests_errors_latency_and_rewards_land_in_the_bucket_of_their_time() -> None:
    clock = Clock()
    store = SeriesStore(clock=clock, cache_s=0)
    for index in range(100):
        store.record("m", "1", index % 10 != 0, (index + 1) / 1000)  # 1..100 ms, every tenth failed
    store.reward("m", "1", 1.0)
    store.reward("m", "1", 0.0)
    store.flush()
    clock.now += 10
    store.record("m", "2", True, 0.5)
    clock.now += 5

    answer = await store.series("m", ["1", "2"], "1h")
    assert (answer.resolution_s, len(answer.starts)) == (10, 360)
    assert answer.starts[-2:] == [START, START + 10]
    first, second = answer.versions
    assert first.version == "1"
    assert second.version == "2"
    assert first.requests_per_s[-2:] == [10.0, 0.0]
    assert first.errors_per_s[-2] == 1.0
    assert first.p50_ms[-2] == pytest.approx(50, abs=2)
    assert first.p99_ms[-2] == pytest.approx(99, abs=2)
    assert first.reward_mean[-2:] == [0.5, None]
    assert first.p50_ms[-1] is None
    assert first.p50_ms[:-2] == [None] * 358
    assert second.requests_per_s[-1] == 0.1
    assert second.p99_ms[-1] == 500.0

    day = await store.series("m", ["1"], "24h")
    assert (day.resolution_s, len(day.starts), day.starts[-1]) == (60, 1440, START)
    assert day.versions[0].requests_per_s[-1] == pytest.approx(100 / 60)  # one minute holds both 10 s buckets
    assert [v.version for v in day.versions] == ["1"]  # the versions asked for only


async def test_a_bucket_leaves_the_window_after_its_span() -> None:
    clock = Clock()
    store = SeriesStore(clock=clock, cache_s=0)
    store.record("m", "1", True, 0.01)
    store.flush()
    clock.now += 3600
    assert sum((await store.series("m", ["1"], "1h")).versions[0].requests_per_s) == 0
    assert sum((await store.series("m", ["1"], "24h")).versions[0].requests_per_s) == pytest.approx(1 / 60)


async def test_an_unknown_window_is_refused_with_the_choices() -> None:
    with pytest.raises(InvalidInput, match="window must be one of 1h, 24h, not '5m'"):
        await SeriesStore().series("m", ["1"], "5m")


def test_a_bucket_survives_its_bytes() -> None:
    store = SeriesStore(clock=Clock())
    store.record("m", "1", False, 0.02)
    store.reward("m", "1", 0.25)
    store.flush()
    bucket = SeriesBucket.from_bytes(store._arms[("m", "1")].levels["1h"][0].to_bytes())
    assert (bucket.start, bucket.requests, bucket.errors, bucket.reward_sum, bucket.rewards) == (
        START,
        1,
        1,
        0.25,
        1,
    )
    assert bucket.latency_ms.get_quantile(0.5) == pytest.approx(20.0)


async def exchange(first_shared: SharedBuckets, second_shared: SharedBuckets) -> None:
    first, second = SeriesStore(first_shared, cache_s=0), SeriesStore(second_shared, cache_s=0)
    for _ in range(30):
        first.record("m", "1", True, 0.010)
    for _ in range(10):
        second.record("m", "1", False, 0.200)
    second.reward("m", "1", 1.0)
    for store in (first, second):
        store.flush()
        await store.publish()

    for store in (first, second):
        for window in ("1h", "24h"):
            answer = await store.series("m", ["1"], window)
            [arm] = answer.versions
            filled = [i for i, rate in enumerate(arm.requests_per_s) if rate]
            assert len(filled) in (1, 2)  # the publish may straddle a bucket boundary
            requests = sum(arm.requests_per_s[i] for i in filled) * answer.resolution_s
            errors = sum(arm.errors_per_s[i] for i in filled) * answer.resolution_s
            assert (round(requests), round(errors)) == (40, 10)
            if len(filled) == 1:
                assert arm.p50_ms[filled[0]] == pytest.approx(10.0)
                assert arm.p99_ms[filled[0]] == pytest.approx(200.0)
                assert arm.reward_mean[filled[0]] == 1.0
    await first.close()
    await second.close()


async def test_processes_merge_their_series_through_the_gateway_database(database_url: str) -> None:
    first, second = await open_any(database_url), await open_any(database_url)  # two gateway processes
    try:
        await exchange(DatabaseBuckets(first), DatabaseBuckets(second))
    finally:
        await close_any(first)
        await close_any(second)


async def test_processes_on_several_hosts_merge_their_series_through_redis(redis_server: RedisServer) -> None:
    first, second = RedisBuckets(redis_server.uri), RedisBuckets(redis_server.uri)
    try:
        await exchange(first, second)
    finally:
        await first.aclose()
        await second.aclose()
