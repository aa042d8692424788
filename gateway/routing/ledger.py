"""The feedback ledger: which version answered each routed request id, for a bounded time.

A reward is counted once: the first feedback for a request id claims its entry, a second one is
refused as a duplicate (409) while the entry is remembered, and an id that is unknown, expired,
or answered by another model is refused as not found (404). ``MemoryLedger`` holds at most
``max_entries`` ids in this process (the oldest are forgotten first); ``RedisLedger`` shares them
between gateway processes, each id expiring after ``ttl_s``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio

from mdeploy.errors import Conflict, NotFound


@dataclass
class Entry:
    model: str
    version: str
    at: float
    claimed: bool = False


class Ledger(Protocol):
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


class MemoryLedger:
    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._entries)

    async def remember(self, request_id: str, model: str, version: str) -> None:
        now = self._clock()
        self._entries.pop(request_id, None)
        self._entries[request_id] = Entry(model, version, now)
        self._forget_old(now)

    async def claim(self, request_id: str, model: str) -> Entry:
        now = self._clock()
        self._forget_old(now)
        entry = self._entries.get(request_id)
        if entry is None or entry.model != model:
            raise _unknown(request_id, model, self._ttl_s)
        if entry.claimed:
            raise _duplicate(request_id)
        entry.claimed = True
        return entry

    def _forget_old(self, now: float) -> None:
        entries = self._entries
        while entries and (
            len(entries) > self._max_entries or now - next(iter(entries.values())).at > self._ttl_s
        ):
            entries.popitem(last=False)

    async def aclose(self) -> None:
        return None


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
