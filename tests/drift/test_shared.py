"""Live drift buckets shared between gateway processes: through the gateway database (SQLite and
a real PostgreSQL) and a real redis-server, a process's report merges the others' rows with its own."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.drift.live import VersionSketches
from gateway.drift.report import drift_report
from gateway.drift.shared import DatabaseBuckets, Published, RedisBuckets, SharedBuckets
from gateway.drift.windows import windows_of
from modelpkg.reference import build_profile
from tests.conftest import close_any, open_any
from tests.services import RedisServer

WINDOWS = windows_of(["5m", "1h"])


def sketches() -> tuple[VersionSketches, VersionSketches]:
    rng = np.random.default_rng(3)
    reference = build_profile(
        {"x": rng.standard_normal((4000, 3)).astype(np.float32)}, {}, "reference", "channel-mean", None, []
    )
    return tuple(  # type: ignore[return-value]
        VersionSketches(reference, [], None, windows=WINDOWS, key=("m", "1")) for _ in range(2)
    )


async def exchange(first_store: SharedBuckets, second_store: SharedBuckets) -> None:
    rng = np.random.default_rng(4)
    first, second = sketches()
    first.ingest({"x": rng.standard_normal((300, 3)).astype(np.float32)}, {})
    shifted = rng.standard_normal((200, 3)).astype(np.float32)
    shifted[:, 1] += 3.0
    second.ingest({"x": shifted}, {})
    for store, own in ((first_store, first), (second_store, second)):
        changed = own.take_changed()
        assert len(changed) == len(WINDOWS)  # the current bucket of each window
        await store.publish(
            [Published("m", "1", WINDOWS[name], b.start, b.to_bytes()) for name, b in changed]
        )
    assert own.take_changed() == []  # nothing new since

    for store, own, alone in ((first_store, first, 300), (second_store, second, 200)):
        assert own.window("5m").rows == alone
        published = [own.bucket_of(raw) for raw in await store.fetch("m", "1", WINDOWS["5m"])]
        assert len(published) == 1  # the other process's bucket, never its own
        merged = own.window("5m", published)
        assert merged.rows == 500
        report = drift_report("m", "1", "5m", own.reference, merged)
        assert report.features[0].name == "x[1]"  # the second process's shift shows in both


async def test_processes_share_buckets_through_the_gateway_database(database_url: str) -> None:
    first, second = await open_any(database_url), await open_any(database_url)  # two gateway processes
    try:
        await exchange(DatabaseBuckets(first), DatabaseBuckets(second))
    finally:
        await close_any(first)
        await close_any(second)


async def test_processes_on_several_hosts_share_buckets_through_redis(redis_server: RedisServer) -> None:
    first, second = RedisBuckets(redis_server.uri), RedisBuckets(redis_server.uri)
    try:
        await exchange(first, second)
    finally:
        await first.aclose()
        await second.aclose()


def test_a_bucket_of_another_reference_is_refused() -> None:
    first, _ = sketches()
    first.ingest({"x": np.zeros((5, 3), np.float32)}, {})
    [(_, bucket), *_] = first.take_changed()
    with pytest.raises(ValueError, match="published bucket has 3 sketches, not 4"):
        type(bucket).from_bytes(bucket.to_bytes(), 4, 0)
