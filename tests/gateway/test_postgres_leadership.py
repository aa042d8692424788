"""Leadership across hosts: one PostgreSQL advisory lock; the lead moves when its holder closes,
loses its backend or hangs, and never to two processes at once.

The failover times are printed (``pytest -s``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy.engine import make_url

from core.errors import InvalidInput
from gateway.database.advisory import PostgresLeadership, advisory_key, asyncpg_dsn
from gateway.database.engine import _MIGRATION_LOCK
from gateway.leadership import Leadership, backends_name
from tests.postgres_locks import Admin, HangingProxy, holds_throughout, until
from tests.services import PostgresServer

RETRY_S = 0.1
CHECK_TIMEOUT_S = 0.5
SLACK_S = 0.5
"""Scheduling on a busy test machine, on top of the intervals the timings are bounded by."""

Start = Callable[..., Awaitable[PostgresLeadership]]


@pytest.fixture
def admin(postgres_url: str, postgres_cluster: PostgresServer) -> Admin:
    return Admin(postgres_url, postgres_cluster.url())


@pytest.fixture
async def start(postgres_url: str) -> AsyncIterator[Start]:
    """Starts a contender for one lead (on ``url``, default the test database); closes them all."""
    started: list[PostgresLeadership] = []

    async def start(url: str = postgres_url) -> PostgresLeadership:
        leadership = PostgresLeadership(
            url, backends_name(["127.0.0.1:8001"]), retry_s=RETRY_S, check_timeout_s=CHECK_TIMEOUT_S
        )
        await leadership.start()
        started.append(leadership)
        return leadership

    yield start
    for leadership in started:
        await leadership.close()


def test_leadership_and_session_keys_never_meet_each_other_or_the_migrations_lock() -> None:
    leader, session = advisory_key("leader", "x"), advisory_key("session", "x")
    assert _MIGRATION_LOCK > 0  # and every key of ours is negative:
    assert max(leader, session) < 0
    assert ((leader + 2**64) >> 62, (session + 2**64) >> 62) == (0b10, 0b11)
    # Every gateway version must compute the same key for a name: a rolling upgrade mixes them.
    assert leader == -5948949156983295932


def test_asyncpg_gets_the_database_url_in_any_driver_spelling() -> None:
    assert asyncpg_dsn("postgresql+asyncpg://u:p@db:5432/m") == "postgresql://u:p@db:5432/m"
    assert asyncpg_dsn("postgresql://u@db/m?sslmode=require") == "postgresql://u@db/m?sslmode=require"
    with pytest.raises(InvalidInput):
        asyncpg_dsn("mysql://u@db/m")


async def test_of_two_processes_on_one_database_exactly_one_leads(start: Start, admin: Admin) -> None:
    first: Leadership = await start()  # the protocol the gateway wires
    second = await start()

    assert first.is_leader
    await holds_throughout(
        lambda: (first.is_leader, second.is_leader) == (True, False), "exactly the first leads", 5 * RETRY_S
    )
    assert len(await admin.holders(second.key)) == 1


async def test_the_lead_moves_within_retry_s_when_the_leader_closes(start: Start) -> None:
    first, second = await start(), await start()

    await first.close()
    assert not first.is_leader
    took = await until(lambda: second.is_leader, "the second to lead")

    print(f"\nleader closed -> new leader in {took:.3f} s (retry_s {RETRY_S})")
    assert took < RETRY_S + SLACK_S


async def test_a_leader_whose_backend_is_terminated_stops_leading_and_the_other_leads(
    start: Start, admin: Admin
) -> None:
    first, second = await start(), await start()
    pid = await admin.holder(first.key)
    assert pid is not None

    async with admin.refusing_connections():  # the first cannot reconnect and win again
        await admin.terminate(pid)
        stopped = await until(lambda: not first.is_leader, "the first to stop leading")
        moved = await until(lambda: second.is_leader, "the second to lead")
        assert not first.is_leader

    print(f"\nbackend terminated -> old leader stepped down in {stopped:.3f} s, new leader in {moved:.3f} s")
    assert stopped < SLACK_S  # told by the closed connection, not by a check
    assert moved < RETRY_S + SLACK_S
    await holds_throughout(lambda: not first.is_leader, "the reconnected first not to lead", 5 * RETRY_S)


async def test_after_the_leaders_backend_is_terminated_exactly_one_leads_again(
    start: Start, admin: Admin
) -> None:
    first, second = await start(), await start()
    pid = await admin.holder(first.key)

    await admin.terminate(pid or 0)

    async def a_new_backend_leads() -> bool:
        holder = await admin.holder(first.key)
        return holder not in (None, pid) and first.is_leader != second.is_leader

    took = await until(a_new_backend_leads, "a new backend to hold the lead and its process to know it")
    print(f"\nbackend terminated -> a leader again in {took:.3f} s")
    assert took < RETRY_S + SLACK_S


async def test_a_leader_on_a_hung_network_steps_down_before_another_process_can_lead(
    start: Start, admin: Admin, postgres_url: str
) -> None:
    proxy = HangingProxy(make_url(postgres_url).port or 5432)
    await proxy.start()
    try:
        first = await start(proxy.url(postgres_url))
        second = await start()
        pid = await admin.holder(first.key)
        assert first.is_leader

        proxy.hang()
        stepped_down = await until(lambda: not first.is_leader, "the hung leader to step down")
        # The server still sees the hung client's backend: nobody else can lead yet.
        assert await admin.holder(first.key) == pid
        assert not second.is_leader
        proxy.drop_upstream()  # the server gives up on the client (its TCP keepalive)
        moved = await until(lambda: second.is_leader, "the second to lead")

        print(f"\nnetwork hung -> leader stepped down in {stepped_down:.3f} s (lease {first.lease_s} s);")
        print(f"server dropped the backend -> new leader in {moved:.3f} s")
        assert stepped_down < first.lease_s + SLACK_S
        assert not first.is_leader
    finally:
        await proxy.close()
