"""Notifications on a real PostgreSQL: a committed change reaches every listening process, a
rolled-back one none, and a listener that lost its connection says so, reconnects and resyncs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import sqlalchemy as sa

from gateway.database.engine import PostgresDatabase
from gateway.database.notifications import RESYNC, NoNotifications, PostgresNotifications, notify
from tests.waiting import wait_until

CHANNEL = "mdeploy_test"


@pytest.fixture
async def writer(postgres_url: str) -> AsyncIterator[PostgresDatabase]:
    database = await PostgresDatabase.open(postgres_url)
    yield database
    await database.close()


@pytest.fixture
async def listener(postgres_url: str) -> AsyncIterator[tuple[PostgresNotifications, list[str]]]:
    """Another process's notifications (check_s small: the tests see a lost connection at once)."""
    notifications = PostgresNotifications(postgres_url, check_s=0.2)
    received: list[str] = []
    notifications.subscribe(CHANNEL, received.append)
    await notifications.start()
    yield notifications, received
    await notifications.close()


async def test_a_committed_notification_reaches_a_subscriber_of_another_connection(
    writer: PostgresDatabase, listener: tuple[PostgresNotifications, list[str]]
) -> None:
    notifications, received = listener
    assert notifications.connected
    assert received == [RESYNC]  # once connected: whatever was cached before may be stale
    await writer.run(notify, CHANNEL, "key-1")
    await wait_until(lambda: received == [RESYNC, "key-1"], "the notification")


async def test_a_late_subscriber_is_resynced_and_then_notified(
    writer: PostgresDatabase, listener: tuple[PostgresNotifications, list[str]]
) -> None:
    notifications, _ = listener
    late: list[str] = []
    notifications.subscribe("mdeploy_other", late.append)
    assert not notifications.connected  # until its channel is listened to
    await wait_until(lambda: notifications.connected and late == [RESYNC], "the new subscription")
    await writer.run(notify, "mdeploy_other", "x")
    await wait_until(lambda: late == [RESYNC, "x"], "the notification on the new channel")


async def test_a_rolled_back_transaction_notifies_nothing(
    writer: PostgresDatabase, listener: tuple[PostgresNotifications, list[str]]
) -> None:
    _, received = listener

    def notify_then_fail(connection: sa.Connection) -> None:
        notify(connection, CHANNEL, "rolled back")
        raise RuntimeError("the change fails")

    with pytest.raises(RuntimeError):
        await writer.run(notify_then_fail)
    await writer.run(notify, CHANNEL, "committed")  # delivered in commit order: after any earlier one
    await wait_until(lambda: "committed" in received, "the committed notification")
    assert received == [RESYNC, "committed"]


async def test_a_terminated_connection_is_reported_then_reconnected_and_resynced(
    postgres_url: str, writer: PostgresDatabase, listener: tuple[PostgresNotifications, list[str]]
) -> None:
    notifications, received = listener
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    await wait_until(lambda: not notifications.connected, "the listener to see its connection gone")
    await wait_until(lambda: notifications.connected, "the listener to reconnect")
    assert received == [RESYNC, RESYNC]
    await writer.run(notify, CHANNEL, "after")  # the writer's pool replaces its terminated connections
    await wait_until(lambda: received == [RESYNC, RESYNC, "after"], "a notification after reconnecting")


async def test_without_postgresql_nothing_is_sent_or_received_and_caches_are_trusted() -> None:
    notifications = NoNotifications()
    received: list[str] = []
    notifications.subscribe(CHANNEL, received.append)
    await notifications.start()
    assert notifications.connected
    engine = sa.create_engine("sqlite://")
    with engine.begin() as connection:
        notify(connection, CHANNEL, "ignored")  # no pg_notify on SQLite: no error either
    await notifications.close()
    assert received == []
