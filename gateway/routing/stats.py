"""Bandit statistics per (model, arm): pulls, rewards, reward sum and sum of squares.

``SQLiteStats`` keeps them in the gateway's database, so they survive a restart and are shared
by gateway processes on one data folder. ``RedisStats`` keeps them in Redis (``shared_state_url``)
for gateway processes on several hosts. Both write every pull and reward at once: a restart
or a crash loses nothing that was answered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio

from gateway.db import ensure_schema
from gateway.routing.policies import ArmStats

SCHEMA = """
CREATE TABLE IF NOT EXISTS bandit_stats (
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    pulls INTEGER NOT NULL DEFAULT 0,
    rewards INTEGER NOT NULL DEFAULT 0,
    reward_sum REAL NOT NULL DEFAULT 0,
    reward_sq REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (model, version)
) STRICT;
"""


class StatsStore(Protocol):
    async def add_pull(self, model: str, version: str) -> None: ...

    async def add_reward(self, model: str, version: str, reward: float) -> None: ...

    async def snapshot(self, model: str) -> dict[str, ArmStats]: ...

    async def reset(self, model: str, versions: Sequence[str]) -> None:
        """Start ``model``'s arms from nothing (a new rollout learns afresh)."""
        ...

    async def aclose(self) -> None: ...


class SQLiteStats:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        ensure_schema(connection, SCHEMA)

    async def add_pull(self, model: str, version: str) -> None:
        self._connection.execute(
            "INSERT INTO bandit_stats (model, version, pulls) VALUES (?, ?, 1) "
            "ON CONFLICT (model, version) DO UPDATE SET pulls = pulls + 1",
            (model, version),
        )

    async def add_reward(self, model: str, version: str, reward: float) -> None:
        self._connection.execute(
            "INSERT INTO bandit_stats (model, version, rewards, reward_sum, reward_sq) "
            "VALUES (?, ?, 1, ?, ?) "
            "ON CONFLICT (model, version) DO UPDATE SET rewards = rewards + 1, "
            "reward_sum = reward_sum + excluded.reward_sum, reward_sq = reward_sq + excluded.reward_sq",
            (model, version, reward, reward * reward),
        )

    async def snapshot(self, model: str) -> dict[str, ArmStats]:
        rows = self._connection.execute(
            "SELECT version, pulls, rewards, reward_sum, reward_sq FROM bandit_stats WHERE model = ?",
            (model,),
        ).fetchall()
        return {
            row["version"]: ArmStats(row["pulls"], row["rewards"], row["reward_sum"], row["reward_sq"])
            for row in rows
        }

    async def reset(self, model: str, versions: Sequence[str]) -> None:
        self._connection.execute("DELETE FROM bandit_stats WHERE model = ?", (model,))

    async def aclose(self) -> None:
        return None


_FIELDS = ("pulls", "rewards", "sum", "sq")


class RedisStats:
    """One hash per model, ``mdeploy:bandit:<model>``, fields ``<version>:<pulls|rewards|sum|sq>``."""

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    @staticmethod
    def _key(model: str) -> str:
        return f"mdeploy:bandit:{model}"

    async def add_pull(self, model: str, version: str) -> None:
        await self._redis.hincrby(  # type: ignore[misc]  # redis-py types sync and async alike
            self._key(model), f"{version}:pulls", 1
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
