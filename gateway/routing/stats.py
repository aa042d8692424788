"""Bandit statistics per (model, arm): pulls, rewards, reward sum and sum of squares.

``DatabaseStats`` keeps them in the gateway's database, so they survive a restart and are shared
by the gateway processes on it. ``RedisStats`` keeps them in Redis (``shared_state_url``)
for gateway processes on several hosts. ``BufferedStats`` sits in front of either on the request
path: a store round trip per request would cost more than the rest of the routing, so pulls are
counted in memory and written every ``flush_s`` (and at shutdown), and snapshots are re-read at
most every ``max_age_s``. Rewards are written at once: a reward, once acknowledged, is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio
import sqlalchemy as sa

from core.tasks import cancelled
from gateway.database.engine import Database
from gateway.database.schema import bandit_stats
from gateway.database.statements import add_to
from gateway.routing.policies import ArmStats

log = logging.getLogger(__name__)


class StatsStore(Protocol):
    def start(self) -> None:
        """Begin background upkeep (on the running event loop)."""
        ...

    async def add_pull(self, model: str, version: str, count: int = 1) -> None: ...

    async def add_reward(self, model: str, version: str, reward: float) -> None: ...

    async def snapshot(self, model: str) -> dict[str, ArmStats]: ...

    async def reset(self, model: str, versions: Sequence[str]) -> None:
        """Start ``model``'s arms from nothing (a new rollout learns afresh)."""
        ...

    async def aclose(self) -> None: ...


class DatabaseStats:
    """Arm statistics in the gateway database (SQLite for one host, PostgreSQL for several): one
    row per (model, version), added to in place, so concurrent gateway processes never lose a count."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def start(self) -> None:
        return None

    async def add_pull(self, model: str, version: str, count: int = 1) -> None:
        await self._db.run(_add, model, version, {"pulls": count})

    async def add_reward(self, model: str, version: str, reward: float) -> None:
        await self._db.run(
            _add, model, version, {"rewards": 1, "reward_sum": reward, "reward_sq": reward * reward}
        )

    async def snapshot(self, model: str) -> dict[str, ArmStats]:
        table = bandit_stats
        query = sa.select(
            table.c.version, table.c.pulls, table.c.rewards, table.c.reward_sum, table.c.reward_sq
        )
        rows = await self._db.read(lambda c: c.execute(query.where(table.c.model == model)).all())
        return {row[0]: ArmStats(row[1], row[2], row[3], row[4]) for row in rows}

    async def reset(self, model: str, versions: Sequence[str]) -> None:
        await self._db.run(lambda c: c.execute(sa.delete(bandit_stats).where(bandit_stats.c.model == model)))

    async def aclose(self) -> None:
        return None


def _add(connection: sa.Connection, model: str, version: str, amounts: dict[str, float]) -> None:
    connection.execute(add_to(connection, bandit_stats, {"model": model, "version": version}, amounts))


_FIELDS = ("pulls", "rewards", "sum", "sq")


class RedisStats:
    """One hash per model, ``mdeploy:bandit:<model>``, fields ``<version>:<pulls|rewards|sum|sq>``."""

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    def start(self) -> None:
        return None

    @staticmethod
    def _key(model: str) -> str:
        return f"mdeploy:bandit:{model}"

    async def add_pull(self, model: str, version: str, count: int = 1) -> None:
        await self._redis.hincrby(  # type: ignore[misc]  # redis-py types sync and async alike
            self._key(model), f"{version}:pulls", count
        )

    async def add_reward(self, model: str, version: str, reward: float) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(self._key(model), f"{version}:rewards", 1)
            pipe.hincrbyfloat(self._key(model), f"{version}:sum", reward)
            pipe.hincrbyfloat(self._key(model), f"{version}:sq", reward * reward)
            await pipe.execute()

    async def snapshot(self, model: str) -> dict[str, ArmStats]:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._key(model))  # type: ignore[misc]
        fields: dict[str, dict[str, float]] = {}
        for name, value in raw.items():
            version, _, field = name.decode().rpartition(":")
            if field in _FIELDS:
                fields.setdefault(version, {})[field] = float(value)
        return {
            version: ArmStats(
                int(f.get("pulls", 0)), int(f.get("rewards", 0)), f.get("sum", 0.0), f.get("sq", 0.0)
            )
            for version, f in fields.items()
        }

    async def reset(self, model: str, versions: Sequence[str]) -> None:
        await self._redis.delete(self._key(model))

    async def aclose(self) -> None:
        await self._redis.aclose()


class BufferedStats:
    """``store`` with pulls counted in memory between flushes and snapshots cached briefly."""

    def __init__(self, store: StatsStore, *, flush_s: float = 0.1, max_age_s: float = 0.05) -> None:
        self._store = store
        self._flush_s = flush_s
        self._max_age_s = max_age_s
        self._pending: Counter[tuple[str, str]] = Counter()
        self._cache: dict[str, tuple[float, dict[str, ArmStats]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="bandit-stats-flush")

    async def add_pull(self, model: str, version: str, count: int = 1) -> None:
        self._pending[(model, version)] += count

    async def add_reward(self, model: str, version: str, reward: float) -> None:
        await self._store.add_reward(model, version, reward)
        self._cache.pop(model, None)

    async def snapshot(self, model: str) -> dict[str, ArmStats]:
        cached = self._cache.get(model)
        now = time.monotonic()
        if cached is None or now - cached[0] > self._max_age_s:
            cached = self._cache[model] = (now, await self._store.snapshot(model))
        stats = dict(cached[1])
        for (pending_model, version), pulls in self._pending.items():
            if pending_model == model:
                arm = stats.get(version, ArmStats())
                stats[version] = ArmStats(arm.pulls + pulls, arm.rewards, arm.reward_sum, arm.reward_sq)
        return stats

    async def reset(self, model: str, versions: Sequence[str]) -> None:
        for key in [key for key in self._pending if key[0] == model]:
            del self._pending[key]
        self._cache.pop(model, None)
        await self._store.reset(model, versions)

    async def flush(self) -> None:
        pending, self._pending = self._pending, Counter()
        for index, ((model, version), pulls) in enumerate(pending.items()):
            try:
                await self._store.add_pull(model, version, pulls)
            except Exception:
                # Keep what was not written for the next flush (the store is out of reach).
                self._pending.update(dict(list(pending.items())[index:]))
                raise
            self._cache.pop(model, None)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush()
            except Exception as error:
                log.warning("bandit pulls not written yet (%s); retrying", error)

    async def aclose(self) -> None:
        await cancelled(self._flusher)
        try:
            await self.flush()
        finally:
            await self._store.aclose()
