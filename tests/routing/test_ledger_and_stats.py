"""The feedback ledger and bandit statistics: in SQLite and in a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
import sqlalchemy as sa

from core.errors import Conflict, NotFound
from gateway.database.engine import Database, SQLiteDatabase
from gateway.database.schema import feedback_ledger
from gateway.db import open_database
from gateway.routing.ledger import DatabaseLedger, Ledger, RedisLedger
from gateway.routing.policies import ArmStats
from gateway.routing.stats import BufferedStats, DatabaseStats, RedisStats
from tests.conftest import close_any, open_any
from tests.gateway.conftest import Clock
from tests.services import RedisServer


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.e2e),
        pytest.param("redis", marks=pytest.mark.e2e),
    ]
)
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    if request.param in ("sqlite", "postgresql"):
        url = (
            f"sqlite:///{tmp_path / 'gateway.sqlite'}"
            if request.param == "sqlite"
            else request.getfixturevalue("postgres_url")
        )
        database = await open_any(url)
        local = DatabaseLedger(database, ttl_s=60, max_entries=100)
        yield local
        await local.aclose()
        await close_any(database)
        return
    server = request.getfixturevalue("redis_server")
    shared = RedisLedger(server.uri, ttl_s=60)
    yield shared
    await shared.aclose()


async def test_feedback_claims_the_version_that_answered_once(ledger: Ledger) -> None:
    await ledger.remember("req-1", "digits", "2")
    entry = await ledger.claim("req-1", "digits")
    assert (entry.model, entry.version) == ("digits", "2")
    with pytest.raises(Conflict, match="already counted"):
        await ledger.claim("req-1", "digits")


async def test_unknown_ids_and_other_models_are_not_found(ledger: Ledger) -> None:
    await ledger.remember("req-2", "digits", "1")
    with pytest.raises(NotFound, match="unknown or expired"):
        await ledger.claim("nobody", "digits")
    with pytest.raises(NotFound):
        await ledger.claim("req-2", "iris")
    assert (await ledger.claim("req-2", "digits")).version == "1"  # the failed claims took nothing


async def test_database_ledger_forgets_expired_and_oldest_entries(database: Database) -> None:
    clock = Clock()
    ledger = DatabaseLedger(database, ttl_s=10, max_entries=3, clock=clock)
    await ledger.remember("old", "m", "1")
    clock.advance(11)
    with pytest.raises(NotFound):
        await ledger.claim("old", "m")
    for i in range(5):
        clock.advance(0.001)
        await ledger.remember(f"r{i}", "m", "1")
    await ledger.flush()
    await ledger.sweep()
    kept = await database.read(lambda c: c.execute(sa.select(feedback_ledger.c.request_id)).scalars().all())
    assert sorted(kept) == ["r2", "r3", "r4"]
    with pytest.raises(NotFound):
        await ledger.claim("r0", "m")
    assert (await ledger.claim("r4", "m")).version == "1"


async def test_a_claim_racing_the_background_write_of_its_id_is_counted_once(database: Database) -> None:
    """On PostgreSQL the periodic write is awaited: a claim for an id it is writing used to miss
    the row (404) or see it unclaimed after its UPDATE had missed it (409)."""
    ledger = DatabaseLedger(database, ttl_s=60, max_entries=10_000, flush_s=0.001)
    ledger.start()
    try:
        for number in range(300):
            await ledger.remember(f"r{number}", "m", "1")
            await asyncio.sleep(0.002 * (number % 3))  # claims land before, during and after writes
            assert (await ledger.claim(f"r{number}", "m")).version == "1"
    finally:
        await ledger.aclose()


async def test_database_ledger_is_shared_by_processes_on_one_database(database_url: str) -> None:
    one, other = await open_any(database_url), await open_any(database_url)  # two gateway processes
    try:
        first = DatabaseLedger(one, ttl_s=60, max_entries=100)
        second = DatabaseLedger(other, ttl_s=60, max_entries=100)
        await first.remember("served-by-first", "m", "2")
        await first.flush()
        assert (await second.claim("served-by-first", "m")).version == "2"
        with pytest.raises(Conflict):
            await first.claim("served-by-first", "m")
    finally:
        await close_any(one)
        await close_any(other)


async def test_redis_ledger_entries_expire(redis_server: RedisServer) -> None:
    ledger = RedisLedger(redis_server.uri, ttl_s=0.05)
    try:
        await ledger.remember("soon-gone", "m", "1")
        async with redis.asyncio.Redis.from_url(redis_server.uri) as client:
            for _ in range(500):  # until Redis expires it (at most 5 s)
                if not await client.exists("mdeploy:feedback:soon-gone"):
                    break
                await asyncio.sleep(0.01)
        with pytest.raises(NotFound):
            await ledger.claim("soon-gone", "m")
    finally:
        await ledger.aclose()


async def test_database_statistics_are_shared_and_survive_reopening(database_url: str) -> None:
    first, second = await open_any(database_url), await open_any(database_url)  # two gateway processes
    try:
        stats, other = DatabaseStats(first), DatabaseStats(second)
        for _ in range(3):
            await stats.add_pull("m", "1")
        await other.add_pull("m", "2")
        await other.add_reward("m", "1", 1.0)
        await stats.add_reward("m", "1", 0.5)
    finally:
        await close_any(first)
        await close_any(second)
    reopened_database = await open_any(database_url)
    try:
        reopened = DatabaseStats(reopened_database)
        assert await reopened.snapshot("m") == {"1": ArmStats(3, 2, 1.5, 1.25), "2": ArmStats(1, 0, 0.0, 0.0)}
        await reopened.reset("m", ["1", "2"])
        assert await reopened.snapshot("m") == {}
    finally:
        await close_any(reopened_database)


async def test_redis_statistics_are_shared_between_clients(redis_server: RedisServer) -> None:
    first, second = RedisStats(redis_server.uri), RedisStats(redis_server.uri)
    try:
        await first.add_pull("m", "1")
        await second.add_pull("m", "1")
        await second.add_reward("m", "1", 0.25)
        assert await first.snapshot("m") == {"1": ArmStats(2, 1, 0.25, 0.0625)}
        await first.reset("m", ["1"])
        assert await second.snapshot("m") == {}
    finally:
        await first.aclose()
        await second.aclose()


async def test_buffered_pulls_show_at_once_and_reach_the_store_on_flush_and_close(tmp_path: Path) -> None:
    database = SQLiteDatabase.open(open_database(tmp_path / "registry.sqlite3"))
    store = DatabaseStats(database)
    buffered = BufferedStats(store, flush_s=3600, max_age_s=3600)
    for _ in range(5):
        await buffered.add_pull("m", "1")
    await buffered.add_reward("m", "1", 1.0)
    assert await buffered.snapshot("m") == {"1": ArmStats(5, 1, 1.0, 1.0)}
    assert await store.snapshot("m") == {"1": ArmStats(0, 1, 1.0, 1.0)}  # rewards are written at once
    await buffered.flush()
    assert await store.snapshot("m") == {"1": ArmStats(5, 1, 1.0, 1.0)}
    await buffered.add_pull("m", "2")
    await buffered.aclose()
    reopened = SQLiteDatabase.open(open_database(tmp_path / "registry.sqlite3"))
    assert (await DatabaseStats(reopened).snapshot("m"))["2"].pulls == 1


async def test_buffered_pulls_wait_for_a_store_that_is_out_of_reach(redis_server: RedisServer) -> None:
    buffered = BufferedStats(RedisStats(redis_server.uri, timeout_s=0.2), flush_s=3600)
    try:
        await buffered.add_pull("m", "1")
        redis_server.stop()
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            await buffered.flush()
        redis_server.start()
        await buffered.flush()  # the pull kept for the next flush
        assert (await buffered.snapshot("m"))["1"].pulls == 1
    finally:
        await buffered.aclose()
