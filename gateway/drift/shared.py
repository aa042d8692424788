"""Live drift buckets shared between gateway processes, so each reports the merged traffic.

Every gateway process sketches the requests it answered. Every few seconds it publishes the
buckets that took rows (``Bucket.to_bytes``: the serialized KLL sketches, class counts and row
count) under its instance id; a report merges its own buckets with the others' published ones.
KLL sketches merge without loss of their error bound, so the merged report is the report of
all traffic, up to one publish interval late for other processes' rows.

``DatabaseBuckets`` shares them through the gateway database (SQLite for processes on one
host, PostgreSQL for several);
``RedisBuckets`` through Redis (``shared_state_url``, several hosts). Published buckets expire
when they leave their window.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

import redis.asyncio
import sqlalchemy as sa

from gateway.database.engine import Database
from gateway.database.schema import drift_buckets
from gateway.database.statements import upsert
from gateway.drift.windows import Window

_KEY = ["model", "version", "window", "start", "instance"]


@dataclass(frozen=True)
class Published:
    model: str
    version: str
    window: Window
    start: int
    data: bytes

    @property
    def expires(self) -> float:
        return float(self.start + self.window.bucket_s + self.window.span_s)


class SharedBuckets(Protocol):
    instance: str
    """This process's id: its own buckets are read locally, never fetched back."""

    async def publish(self, buckets: list[Published]) -> None: ...

    async def fetch(self, model: str, version: str, window: Window) -> list[bytes]:
        """Other processes' buckets of ``window`` that still overlap it."""
        ...

    async def aclose(self) -> None: ...


log = logging.getLogger(__name__)


async def flush_and_publish(
    flush: Callable[[], Awaitable[None]],
    publish: Callable[[], Awaitable[None]],
    flush_s: float,
    publish_s: float,
    what: str,
) -> None:
    """Until cancelled: ``flush()`` every ``flush_s`` (queued samples into this process's buckets)
    and ``publish()`` every ``publish_s`` (them to the shared store). A failure is logged and the
    loop goes on: a bad sample must not stop the others, and a store that is down gets the buckets
    at a later round."""
    loop = asyncio.get_running_loop()
    published_at = loop.time()
    while True:
        await asyncio.sleep(flush_s)
        try:
            await flush()
        except Exception:
            log.exception("%s: flush failed", what)
        if loop.time() - published_at >= publish_s:
            published_at = loop.time()
            try:
                await publish()
            except Exception as error:
                log.warning("%s not published: %s", what, error)


def new_instance_id() -> str:
    return uuid.uuid4().hex[:16]


class DatabaseBuckets:
    """Through the gateway database: one row per (model, version, window, bucket, process)."""

    def __init__(self, database: Database) -> None:
        self.instance = new_instance_id()
        self._db = database

    async def publish(self, buckets: list[Published]) -> None:
        now = time.time()

        def write(connection: sa.Connection) -> None:
            for bucket in buckets:
                row = {
                    "model": bucket.model,
                    "version": bucket.version,
                    "window": bucket.window.name,
                    "start": bucket.start,
                    "instance": self.instance,
                    "expires": bucket.expires,
                    "data": bucket.data,
                }
                connection.execute(upsert(connection, drift_buckets, row, _KEY))
            connection.execute(sa.delete(drift_buckets).where(drift_buckets.c.expires < now))

        await self._db.run(write)

    async def fetch(self, model: str, version: str, window: Window) -> list[bytes]:
        oldest = int(time.time()) - window.span_s - window.bucket_s
        table = drift_buckets
        query = sa.select(table.c.data).where(
            table.c.model == model,
            table.c.version == version,
            table.c.window == window.name,
            table.c.start > oldest,
            table.c.instance != self.instance,
        )
        rows = await self._db.read(lambda connection: connection.execute(query).scalars().all())
        return [bytes(data) for data in rows]

    async def aclose(self) -> None:
        return None


class RedisBuckets:
    """One hash per (model, version, window, bucket start), a field per process, expiring with it."""

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        self.instance = new_instance_id()
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    @staticmethod
    def _key(model: str, version: str, window: Window, start: int) -> str:
        return f"mdeploy:drift:{quote(model, safe='')}:{quote(version, safe='')}:{window.name}:{start}"

    async def publish(self, buckets: list[Published]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                key = self._key(bucket.model, bucket.version, bucket.window, bucket.start)
                pipe.hset(key, mapping={self.instance: bucket.data})
                pipe.expireat(key, int(bucket.expires) + 1)
            await pipe.execute()

    async def fetch(self, model: str, version: str, window: Window) -> list[bytes]:
        now = int(time.time())
        newest = window.bucket_start(now)
        starts = range(newest - window.span_s - window.bucket_s, newest + 1, window.bucket_s)
        async with self._redis.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.hgetall(self._key(model, version, window, start))
            answers = await pipe.execute()
        return [
            bytes(data)
            for answer in answers
            for instance, data in answer.items()
            if (instance.decode() if isinstance(instance, bytes) else instance) != self.instance
        ]

    async def aclose(self) -> None:
        await self._redis.aclose()
