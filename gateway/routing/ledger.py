"""The feedback ledger: which version answered each routed request id, for a bounded time.

A reward is counted once: the first feedback for a request id claims its entry, a second one is
refused as a duplicate (409) while the entry is remembered, and an id that is unknown, expired,
or answered by another model is refused as not found (404). ``DatabaseLedger`` keeps the ids in
the gateway's database (at most ``max_entries``, each for ``ttl_s``); ``RedisLedger`` shares them
between gateway processes on several hosts, each id expiring after ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio
import sqlalchemy as sa

from core.errors import Conflict, NotFound
from core.tasks import cancelled
from gateway.database.engine import Database
from gateway.database.schema import feedback_ledger
from gateway.database.statements import upsert_many

log = logging.getLogger(__name__)


@dataclass
class Entry:
    model: str
    version: str
    at: float
    claimed: bool = False


class Ledger(Protocol):
    def start(self) -> None:
        """Begin background upkeep (on the running event loop)."""
        ...

    async def remember(self, request_id: str, model: str, version: str) -> None: ...

    async def claim(self, request_id: str, model: str) -> Entry:
        """The entry of ``request_id``, marked as rewarded; NotFound or Conflict when it cannot count."""
        ...

    async def aclose(self) -> None: ...


def _unknown(request_id: str, model: str, ttl_s: float) -> NotFound:
    return NotFound(
        f"request id {request_id!r} was not answered by a routed version of '{model}' within the last "
        f"{ttl_s:g} s (unknown or expired); feedback needs the X-Request-Id of a prediction without a version"
    )


def _duplicate(request_id: str) -> Conflict:
    return Conflict(
        f"feedback for request id {request_id!r} was already counted; each request is rewarded once"
    )


class DatabaseLedger:
    """The ledger in the gateway's database: memory stays flat however many ids are remembered,
    the gateway processes on the database share it, and it survives a restart.

    New ids are written in one transaction every ``flush_s`` (an INSERT per request would cost
    more than routing it); a claim for an id not written yet writes the pending ones first.
    Expired ids, and the oldest beyond ``max_entries``, are deleted every ``sweep_s``, by one
    process of several: the one for which ``sweeps()`` holds (``gateway.leadership``).
    """

    def __init__(
        self,
        database: Database,
        ttl_s: float,
        max_entries: int,
        *,
        flush_s: float = 0.1,
        sweep_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        sweeps: Callable[[], bool] | None = None,
    ) -> None:
        self._db = database
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._flush_s = flush_s
        self._sweep_s = sweep_s
        self._clock = clock
        self._sweeps = sweeps
        self._pending: dict[str, tuple[str, str, float]] = {}
        # One flush at a time; a claim for an id being written waits for it (on PostgreSQL the
        # write is awaited, and a claim racing it would not see the row, or see it unclaimed).
        self._flushing = asyncio.Lock()
        self._in_flight: dict[str, tuple[str, str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._maintain(), name="feedback-ledger")

    async def remember(self, request_id: str, model: str, version: str) -> None:
        self._pending[request_id] = (model, version, self._clock())

    async def claim(self, request_id: str, model: str) -> Entry:
        if request_id in self._pending or request_id in self._in_flight:
            await self.flush()  # waits for a flush under way, then writes what is pending
        oldest = self._clock() - self._ttl_s
        table = feedback_ledger
        mine = (table.c.request_id == request_id, table.c.model == model, table.c.at >= oldest)

        def write(connection: sa.Connection) -> tuple[str, float] | bool | None:
            claimed = connection.execute(
                sa.update(table)
                .where(*mine, table.c.claimed == 0)
                .values(claimed=1)
                .returning(table.c.version, table.c.at)
            ).first()
            if claimed is not None:
                return claimed[0], claimed[1]
            return connection.execute(sa.select(table.c.claimed).where(*mine)).first() is not None

        answer = await self._db.run(write)
        if isinstance(answer, tuple):
            return Entry(model, answer[0], answer[1], claimed=True)
        if answer:
            raise _duplicate(request_id)
        raise _unknown(request_id, model, self._ttl_s)

    async def flush(self) -> None:
        async with self._flushing:
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
            self._in_flight = pending
            rows = [
                {"request_id": request_id, "model": model, "version": version, "at": at, "claimed": 0}
                for request_id, (model, version, at) in pending.items()
            ]
            try:
                await self._db.run(upsert_many, feedback_ledger, rows, ["request_id"])
            except BaseException:
                self._pending = {**pending, **self._pending}  # written next time, not lost
                raise
            finally:
                self._in_flight = {}

    async def sweep(self) -> None:
        """Forget expired ids and the oldest beyond ``max_entries``."""
        table = feedback_ledger
        expired = self._clock() - self._ttl_s

        def write(connection: sa.Connection) -> None:
            connection.execute(sa.delete(table).where(table.c.at < expired))
            edge = connection.execute(
                sa.select(table.c.at).order_by(table.c.at.desc()).limit(1).offset(self._max_entries - 1)
            ).first()
            if edge is not None:
                connection.execute(sa.delete(table).where(table.c.at < edge[0]))

        await self._db.run(write)

    async def _maintain(self) -> None:
        swept = time.monotonic()
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush()
                if time.monotonic() - swept >= self._sweep_s:
                    swept = time.monotonic()
                    if self._sweeps is None or self._sweeps():
                        await self.sweep()
            except sa.exc.SQLAlchemyError as error:
                log.warning("feedback ledger not written yet (%s); retrying", error)

    async def aclose(self) -> None:
        await cancelled(self._task)
        await self.flush()


# KEYS[1]: the entry (a hash of model, version, at, claimed). ARGV[1]: the model.
# Answers nil (unknown or another model), "dup" (claimed before) or the version, atomically.
_CLAIM = """
local entry = redis.call('HMGET', KEYS[1], 'model', 'version', 'claimed')
if not entry[1] or entry[1] ~= ARGV[1] then return nil end
if entry[3] then return 'dup' end
redis.call('HSET', KEYS[1], 'claimed', '1')
return entry[2]
"""


class RedisLedger:
    def __init__(self, url: str, ttl_s: float, timeout_s: float = 1.0) -> None:
        self._ttl_s = ttl_s
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._claim = self._redis.register_script(_CLAIM)

    def start(self) -> None:
        return None  # Redis expires the ids itself

    @staticmethod
    def _key(request_id: str) -> str:
        return f"mdeploy:feedback:{request_id}"

    async def remember(self, request_id: str, model: str, version: str) -> None:
        key = self._key(request_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={"model": model, "version": version, "at": time.time()})
            pipe.pexpire(key, int(self._ttl_s * 1000))
            await pipe.execute()

    async def claim(self, request_id: str, model: str) -> Entry:
        answer = await self._claim(keys=[self._key(request_id)], args=[model])
        if answer is None:
            raise _unknown(request_id, model, self._ttl_s)
        version = answer.decode() if isinstance(answer, bytes) else str(answer)
        if version == "dup":
            raise _duplicate(request_id)
        return Entry(model, version, time.time(), claimed=True)

    async def aclose(self) -> None:
        await self._redis.aclose()
