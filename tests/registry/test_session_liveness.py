"""Whether the process owning a work session runs: its flock on one host, its PostgreSQL advisory
lock across hosts; taken again after a lost connection, and never "dead" when unknown."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from core.errors import Conflict, Internal, Unavailable
from gateway.database.advisory import PostgresLiveness, advisory_key
from gateway.registry.sessions import LocalLiveness, Session, SessionLiveness
from tests.postgres_locks import Admin, until
from tests.services import PostgresServer

RETRY_S = 0.1
SLACK_S = 0.5

OpenLiveness = Callable[[], Awaitable[SessionLiveness]]


@pytest.fixture
def admin(postgres_url: str, postgres_cluster: PostgresServer) -> Admin:
    return Admin(postgres_url, postgres_cluster.url())


@pytest.fixture
async def open_liveness(postgres_url: str) -> AsyncIterator[OpenLiveness]:
    """Opens one process's liveness on the test database (it connects on first use); closes them all."""
    started: list[SessionLiveness] = []

    async def open_liveness() -> SessionLiveness:
        liveness = PostgresLiveness(postgres_url, retry_s=RETRY_S, check_timeout_s=0.5)
        started.append(liveness)
        return liveness

    yield open_liveness
    for liveness in started:
        await liveness.close()


def new_id() -> str:
    return uuid.uuid4().hex


async def test_a_started_session_is_alive_on_this_host_until_it_closes(tmp_path: Path) -> None:
    liveness: SessionLiveness = LocalLiveness(tmp_path)
    session = Session.start(tmp_path)

    await liveness.hold(session.id)
    assert await liveness.is_alive(session.id)
    session.close()
    assert not await liveness.is_alive(session.id)
    assert not await liveness.is_alive(new_id())
    await liveness.close()


async def test_holding_a_session_not_started_on_this_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Internal, match="was not started"):
        await LocalLiveness(tmp_path).hold(new_id())


async def test_processes_on_postgres_see_each_others_sessions_alive_and_a_closed_ones_dead(
    open_liveness: OpenLiveness,
) -> None:
    first, second = await open_liveness(), await open_liveness()
    first_id, second_id = new_id(), new_id()
    await first.hold(first_id)
    await second.hold(second_id)

    assert await first.is_alive(second_id)
    assert await second.is_alive(first_id)
    assert await first.is_alive(first_id)
    assert not await first.is_alive(new_id())

    await second.close()
    assert not await first.is_alive(second_id)  # released when close returns


async def test_holding_a_session_another_process_holds_is_a_conflict(open_liveness: OpenLiveness) -> None:
    first, second = await open_liveness(), await open_liveness()
    session_id = new_id()
    await first.hold(session_id)

    with pytest.raises(Conflict):
        await second.hold(session_id)
    assert await second.is_alive(session_id)


async def test_a_holder_whose_backend_was_terminated_holds_its_session_again_once_reconnected(
    open_liveness: OpenLiveness, admin: Admin
) -> None:
    holder, observer = await open_liveness(), await open_liveness()
    session_id = new_id()
    await holder.hold(session_id)
    key = advisory_key("session", session_id)
    pid = await admin.holder(key)

    await admin.terminate(pid or 0)

    async def held_by_a_new_backend() -> bool:
        return (await admin.holder(key)) not in (None, pid)

    took = await until(held_by_a_new_backend, "the holder to take its session's lock again")
    print(f"\nsession backend terminated -> held again in {took:.3f} s")
    assert took < RETRY_S + SLACK_S
    assert await observer.is_alive(session_id)


async def test_liveness_is_unknown_not_dead_while_postgres_cannot_be_reached(
    open_liveness: OpenLiveness, admin: Admin
) -> None:
    holder, observer = await open_liveness(), await open_liveness()
    holder_id, observer_id = new_id(), new_id()
    await holder.hold(holder_id)
    await observer.hold(observer_id)
    observer_pid = await admin.holder(advisory_key("session", observer_id))

    async with admin.refusing_connections():
        await admin.terminate(observer_pid or 0)
        with pytest.raises(Unavailable):
            await observer.is_alive(holder_id)
        with pytest.raises(Unavailable):
            await observer.hold(new_id())

    async def answers_again() -> bool:
        try:
            return await observer.is_alive(holder_id)
        except Unavailable:
            return False

    await until(answers_again, "the observer to reconnect and answer")
    await until(lambda: holder.is_alive(observer_id), "the observer to hold its session again")
