"""The series at a glance (request rate, p99, error rate over the last minutes, per model and
version), two processes' glances merged through the gateway database, and the store's memory
staying bounded as versions come and go."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InvalidInput
from gateway.database.engine import SQLiteDatabase
from gateway.db import open_database
from gateway.drift.shared import DatabaseBuckets
from gateway.timeseries.series import SeriesStore

START = 1_800_000_000  # a multiple of 60


class Clock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


async def test_a_glance_sums_the_window_per_version_and_per_model() -> None:
    clock = Clock()
    store = SeriesStore(clock=clock, cache_s=0)
    store.record("m", "1", True, 5.0)  # ten minutes ago: outside the 5 min window
    store.flush()
    clock.now += 600
    for index in range(100):
        store.record("m", "1", index % 10 != 0, (index + 1) / 1000)  # 1..100 ms, every tenth failed
    for _ in range(50):
        store.record("m", "2", True, 0.001)
    store.flush()
    clock.now += 60
    answer = await store.glance({"m": ["2", "1"], "quiet": ["1"]}, "5m")

    assert (answer.window, answer.window_s) == ("5m", 300)
    model, quiet = answer.models
    seconds = 300 - 10  # the window's last bucket has just begun: 29 full ones
    assert model.model == "m"
    assert [v.version for v in model.versions] == ["1", "2"]
    first, second = model.versions
    assert first.requests_per_s == pytest.approx(100 / seconds, rel=1e-3)
    assert first.error_rate == 0.1
    assert first.p99_ms == pytest.approx(99, abs=2)  # the 5 s request ten minutes ago is out
    assert (second.error_rate, second.p99_ms) == (0.0, 1.0)
    assert model.requests_per_s == pytest.approx(150 / seconds, rel=1e-3)
    assert model.error_rate == pytest.approx(10 / 150, abs=1e-4)
    assert model.p99_ms == pytest.approx(99, abs=2)
    assert quiet.model == "quiet"
    assert (quiet.requests_per_s, quiet.p99_ms, quiet.error_rate) == (0.0, None, None)

    hour = await store.glance({"m": ["1"]}, "1h")
    assert hour.models[0].requests_per_s == pytest.approx(101 / 3590, rel=1e-3)
    assert hour.models[0].p99_ms == pytest.approx(100, abs=2)


async def test_a_glance_is_cached_briefly_for_every_key_that_asks() -> None:
    clock = Clock()
    store = SeriesStore(clock=clock, cache_s=2)
    store.record("m", "1", True, 0.01)
    before = await store.glance({"m": ["1"]})
    store.record("m", "1", True, 0.01)
    clock.now += 1
    assert (await store.glance({"m": ["1"], "n": ["3"]})).models[0] == before.models[0]
    clock.now += 2
    later = (await store.glance({"m": ["1"]})).models[0]
    assert later.requests_per_s > before.models[0].requests_per_s


@pytest.mark.parametrize("window", ["30s", "2h", "65s", "5 m", "0m", "", "1d"])
async def test_a_glance_window_outside_a_minute_to_an_hour_is_refused(window: str) -> None:
    with pytest.raises(InvalidInput, match="window must last 1m to 1h in whole 10 s steps"):
        await SeriesStore().glance({"m": ["1"]}, window)


async def test_processes_merge_their_glances_through_the_gateway_database(tmp_path: Path) -> None:
    path = open_database(tmp_path / "gateway.sqlite")
    databases = [SQLiteDatabase.open(path), SQLiteDatabase.open(path)]
    first, second = (SeriesStore(DatabaseBuckets(db), cache_s=0) for db in databases)
    try:
        for _ in range(30):
            first.record("m", "1", True, 0.010)
        for _ in range(10):
            second.record("m", "1", False, 0.200)
        for store in (first, second):
            store.flush()
            await store.publish()
        for store in (first, second):
            [arm] = (await store.glance({"m": ["1"]})).models[0].versions
            assert arm.error_rate == 0.25
            assert arm.p99_ms == pytest.approx(200.0)
            assert arm.requests_per_s > 0
    finally:
        for store in (first, second):
            await store.close()
        for db in databases:
            await db.close()


async def test_the_series_held_stay_bounded_as_versions_come_and_go() -> None:
    clock = Clock()
    served: set[tuple[str, str]] = set()
    store = SeriesStore(clock=clock, served=lambda: served)
    for version in range(1, 101):  # a new version an hour, the one before unloaded
        served.clear()
        served.add(("m", str(version)))
        for _ in range(20):
            store.record("m", str(version), True, 0.01)
            clock.now += 180
            store.flush()
            await store.publish()
            store.sweep()
        assert store.held <= 2  # the served version, and the one before until its second sweep
    assert store.held == 1


async def test_a_version_idle_for_a_day_is_dropped_even_while_served() -> None:
    clock = Clock()
    store = SeriesStore(clock=clock, served=lambda: [("m", "1")])
    store.record("m", "1", True, 0.01)
    store.flush()
    await store.publish()
    clock.now += 86_000
    store.sweep()
    assert store.held == 1  # its bucket is still in the day
    clock.now += 460
    store.sweep()
    assert store.held == 0
    assert (await store.series("m", ["1"], "24h")).versions[0].requests_per_s == [0.0] * 1440


async def test_an_unloaded_versions_unpublished_buckets_are_kept_until_published(tmp_path: Path) -> None:
    database = SQLiteDatabase.open(open_database(tmp_path / "gateway.sqlite"))
    store = SeriesStore(DatabaseBuckets(database), served=lambda: [])
    try:
        store.record("m", "1", True, 0.01)
        store.flush()
        store.sweep()
        store.sweep()
        assert store.held == 1  # what other processes have not seen yet is not lost
        await store.publish()
        store.sweep()
        assert store.held == 0
    finally:
        await store.close()
        await database.close()
