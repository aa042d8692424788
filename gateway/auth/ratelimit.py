"""Rate limits per API key and scope: one slowapi ``Limiter``, shared by every route.

Counters are keyed by key id and scope (never by client address: many clients share one NAT,
one client may call from many addresses). A key's own limit overrides its scope's default.
The sliding-window-counter strategy smooths the burst a fixed window allows at its edges and
keeps two counters per key, so it costs one Redis script call per request.

The ``slowapi.Limiter`` is configured once (key function: the API key's id; the storage URI;
the strategy; headers on) and owns the storage. The Starlette routes (admin, feedback,
metadata) count through its strategy, and a refusal is its ``RateLimitExceeded``, answered by
its handler with its headers (``GatewayLimiter`` only formats them). The prediction path counts
in that same storage without slowapi's per-request machinery:

- ``memory://`` is ``LoopCounters`` (``gateway.auth.loop_counters``), which slowapi builds from
  the ``mdeploy-loop://`` URI; the prediction path calls ``hit_with_stats`` on that very object.
  limits' own memory storage (slowapi's ``memory://``) costs 8.5x as much per count and starts
  a timer thread every 10 ms; with it the gateway served 24% fewer predictions per second (the
  numbers are in ``gateway.auth.loop_counters``).
- ``redis://host:port``: slowapi's client is synchronous, so the routes call it in a worker
  thread, and the prediction path counts in the same Redis keys through limits' asyncio
  storage, which never blocks the event loop.

When Redis is unreachable the limiter either lets requests through (fail open) or refuses them
with 503 (fail closed); it stops calling Redis for ``probe_interval_s`` after a failure, so an
outage costs no timeout per request, and recovers by itself at the first successful probe.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import anyio.to_thread
import limits
import redis
import redis.asyncio
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage import StorageTypes, storage_from_string
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.wrappers import Limit
from starlette.requests import Request
from starlette.responses import Response

from core.errors import InvalidInput, ResourceExhausted, Unavailable
from gateway.auth.loop_counters import LoopCounters
from gateway.auth.scopes import KeyScope

if TYPE_CHECKING:
    from gateway.auth.keys import KeyRecord

log = logging.getLogger(__name__)

_REDIS_SCHEMES = {"redis", "rediss"}
_KEY_PREFIX = "mdeploy:ratelimit"
_STRATEGY = "sliding-window-counter"
_RATE_LIMIT_HELP = "write N/second, N/minute, N/hour or N/day (e.g. 100/minute, 10 per 5 seconds)"


@functools.lru_cache(maxsize=4096)
def parse_rate_limit(text: str) -> limits.RateLimitItem:
    """One limit such as ``100/minute``; raises InvalidInput saying what to write.

    Cached: a key's own limit is parsed on each of its requests.
    """
    try:
        items = limits.parse_many(text)
    except ValueError:
        raise InvalidInput(f"rate limit {text!r} is not understood; {_RATE_LIMIT_HELP}") from None
    if len(items) != 1 or items[0].amount < 1:
        raise InvalidInput(f"rate limit {text!r} must be one positive limit; {_RATE_LIMIT_HELP}")
    return items[0]


_HEADER_NAMES = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
_LIMIT, _REMAINING, _RESET = (name.lower().encode() for name in _HEADER_NAMES)


@dataclass(slots=True)  # per request: a frozen dataclass costs ~4x to build
class RateLimitState:
    """Where a key stands after a hit: the X-RateLimit-* headers of its response."""

    limit: int
    remaining: int
    reset_at: float
    """Seconds since the epoch when the next request is allowed again (when one more slot frees up)."""

    def headers(self) -> dict[str, str]:
        limit, remaining, reset = _HEADER_NAMES
        return {limit: str(self.limit), remaining: str(self.remaining), reset: str(math.ceil(self.reset_at))}

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The same headers as ASGI wants them (lower-case names, bytes)."""
        return [
            (_LIMIT, b"%d" % self.limit),
            (_REMAINING, b"%d" % self.remaining),
            (_RESET, b"%d" % math.ceil(self.reset_at)),
        ]

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.reset_at - now))


class RouteLimit(NamedTuple):
    """What slowapi keeps at ``request.state.view_rate_limit``, (limit, [key id, scope]), plus
    where the key stood after the hit, so headers need no second storage read."""

    limit: limits.RateLimitItem
    identifiers: list[str]
    state: RateLimitState


class GatewayLimiter(Limiter):
    """slowapi's Limiter, writing its headers as the prediction path does.

    slowapi 0.1.10 writes ``X-RateLimit-Reset`` as a float (limits' window stats are floats)
    and ``Retry-After`` on every response; this writes the epoch second, and ``Retry-After``
    on refusals only (RFC 9110 gives it no meaning on a 200).
    """

    def _inject_headers(self, response: Response, current_limit: Any) -> Response:
        if isinstance(current_limit, RouteLimit):
            state = current_limit.state
            response.headers.update(state.headers())
            if response.status_code == 429:
                response.headers["Retry-After"] = str(state.retry_after(time.time()))
        return response


def api_key_id(request: Request) -> str:
    """slowapi's key function: the id of the API key the guard accepted (never the address)."""
    key: KeyRecord = request.state.api_key
    return key.id


@dataclass(frozen=True, slots=True)
class _Counter:
    """One key's limit in one scope, with limits' storage key for it: worked out once, not per
    request (``item.key_for`` and hashing a RateLimitItem cost ~1 µs each)."""

    item: limits.RateLimitItem
    storage_key: str
    amount: int
    expiry: int


class RateLimiter:
    """The gateway's slowapi Limiter and the prediction path's view of its storage (module docstring)."""

    def __init__(
        self,
        storage_uri: str,
        defaults: Mapping[KeyScope, str],
        fail_open: bool,
        *,
        timeout_s: float = 0.5,
        probe_interval_s: float = 1.0,
    ) -> None:
        self._defaults = {scope: _default_limit(scope, defaults) for scope in KeyScope}
        self._fail_open = fail_open
        self._probe_interval_s = probe_interval_s
        self._kind = urlsplit(storage_uri).scheme.removeprefix("async+")
        slowapi_uri, options = _slowapi_storage(storage_uri, timeout_s)
        self.slowapi = GatewayLimiter(
            key_func=api_key_id,
            storage_uri=slowapi_uri,
            storage_options=options,
            strategy=_STRATEGY,
            headers_enabled=True,
        )
        storage = self.slowapi.limiter.storage
        self._in_process = storage if isinstance(storage, LoopCounters) else None
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._strategy: SlidingWindowCounterRateLimiter | None = None
        if self._in_process is None:
            self._pool, async_storage = _async_twin(storage_uri, timeout_s)
            self._strategy = SlidingWindowCounterRateLimiter(async_storage)
        # (key id, scope, the key's own limit) → its counter; the own limit is part of the
        # name so that a key whose limit changed is counted under its new limit.
        self._counters: dict[tuple[str, KeyScope, str | None], _Counter] = {}
        self._errors: tuple[type[Exception], ...] = (StorageError, OSError, redis.RedisError)
        self._down_since: float | None = None
        self._next_probe = 0.0

    @property
    def in_process(self) -> bool:
        """Counted in this process (memory://): ``hit_in_process`` answers without waiting."""
        return self._in_process is not None

    def hit_in_process(self, key: KeyRecord, scope: KeyScope) -> RateLimitState:
        """``hit`` for a limiter that counts in this process."""
        assert self._in_process is not None
        counter = self._counters.get((key.id, scope, key.rate_limit)) or self._counter(key, scope)
        allowed, remaining, reset_at = self._in_process.hit_with_stats(
            counter.storage_key, counter.amount, counter.expiry
        )
        state = RateLimitState(counter.amount, remaining, reset_at)
        if not allowed:
            raise _exhausted(key, scope, counter.item, state, time.time())
        return state

    async def hit(self, key: KeyRecord, scope: KeyScope) -> RateLimitState:
        """Count one request of ``key`` in ``scope``; raises ResourceExhausted (429) past the limit."""
        if self._in_process is not None:
            return self.hit_in_process(key, scope)
        item = self._item_for(key, scope)
        now = time.time()
        assert self._strategy is not None
        if self._storage_resting(now):
            return self._outage(item, now)
        try:
            allowed = await self._strategy.hit(item, key.id, scope.value)
            stats = await self._strategy.get_window_stats(item, key.id, scope.value)
        except self._errors as error:
            return self._failed(item, now, error)
        self._recovered()
        state = RateLimitState(item.amount, stats.remaining, stats.reset_time)
        if not allowed:
            raise _exhausted(key, scope, item, state, now)
        return state

    async def hit_route(self, request: Request, key: KeyRecord, scope: KeyScope) -> RateLimitState:
        """Count a Starlette route's request through slowapi's strategy; raises slowapi's
        RateLimitExceeded past the limit (its handler answers 429).

        ``request.state.view_rate_limit`` then holds what slowapi's header injection reads.
        """
        item = self._item_for(key, scope)
        if self._in_process is not None:
            allowed, state = self._slowapi_hit(item, key.id, scope)
        else:  # slowapi's Redis client is synchronous: keep its round trips off the event loop
            allowed, state = await anyio.to_thread.run_sync(self._slowapi_hit, item, key.id, scope)
        request.state.view_rate_limit = RouteLimit(item, [key.id, scope.value], state)
        if not allowed:
            retry_after = state.retry_after(time.time())
            message = f"{item} for API key {key.id} ({scope.value}); retry in {retry_after} s"
            limit = Limit(item, api_key_id, scope.value, False, None, message, None, 1, False)
            raise RateLimitExceeded(limit)
        return state

    def _slowapi_hit(
        self, item: limits.RateLimitItem, key_id: str, scope: KeyScope
    ) -> tuple[bool, RateLimitState]:
        now = time.time()
        if self._storage_resting(now):
            return True, self._outage(item, now)
        strategy = self.slowapi.limiter
        try:
            allowed = strategy.hit(item, key_id, scope.value)
            stats = strategy.get_window_stats(item, key_id, scope.value)
        except self._errors as error:
            return True, self._failed(item, now, error)
        self._recovered()
        return allowed, RateLimitState(item.amount, stats.remaining, stats.reset_time)

    def _item_for(self, key: KeyRecord, scope: KeyScope) -> limits.RateLimitItem:
        """The key's own limit, else its scope's default."""
        return parse_rate_limit(key.rate_limit) if key.rate_limit else self._defaults[scope]

    def _counter(self, key: KeyRecord, scope: KeyScope) -> _Counter:
        item = self._item_for(key, scope)
        if len(self._counters) >= 10_000:
            self._counters.clear()
        counter = _Counter(item, item.key_for(key.id, scope.value), item.amount, item.get_expiry())
        self._counters[(key.id, scope, key.rate_limit)] = counter
        return counter

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        pool = getattr(self.slowapi.limiter.storage, "connection_pool", None)
        if isinstance(pool, redis.ConnectionPool):
            pool.disconnect()

    def _storage_resting(self, now: float) -> bool:
        """Down, and not yet time to probe it again."""
        return self._down_since is not None and now < self._next_probe

    def _failed(self, item: limits.RateLimitItem, now: float, error: Exception) -> RateLimitState:
        if self._down_since is None:
            self._down_since = now
            action = "letting requests through" if self._fail_open else "refusing requests with 503"
            log.warning("rate-limit storage (%s) unreachable, %s: %r", self._kind, action, error)
        self._next_probe = now + self._probe_interval_s
        return self._outage(item, now)

    def _outage(self, item: limits.RateLimitItem, now: float) -> RateLimitState:
        if not self._fail_open:
            raise Unavailable(
                f"the rate-limit storage ({self._kind}) is unreachable, so requests cannot be counted;"
                " retry later",
                headers={"Retry-After": str(math.ceil(self._probe_interval_s))},
            )
        # Counters are unknown while the storage is down: report the full allowance.
        return RateLimitState(item.amount, item.amount, now + item.get_expiry())

    def _recovered(self) -> None:
        if self._down_since is not None:
            outage_s = time.time() - self._down_since
            log.warning("rate-limit storage (%s) reachable again after %.1f s", self._kind, outage_s)
            self._down_since = None


def _default_limit(scope: KeyScope, defaults: Mapping[KeyScope, str]) -> limits.RateLimitItem:
    if scope not in defaults:
        raise InvalidInput(f"no default rate limit for scope {scope.value!r}")
    try:
        return parse_rate_limit(defaults[scope])
    except InvalidInput as error:
        raise InvalidInput(f"default of scope {scope.value}: {error.message}") from None


def _slowapi_storage(uri: str, timeout_s: float) -> tuple[str, dict[str, Any]]:
    """The storage URI and options slowapi's Limiter builds its storage from."""
    scheme = urlsplit(uri).scheme.removeprefix("async+")
    if scheme == "memory":
        return f"{LoopCounters.STORAGE_SCHEME[0]}://", {}
    if scheme not in _REDIS_SCHEMES:
        raise InvalidInput(f"rate-limit storage {uri!r} is not supported; use memory:// or redis://host:port")
    # Short timeouts and no retries (redis-py retries with seconds of backoff by default, which
    # would stall every request during an outage).
    options = {
        "key_prefix": _KEY_PREFIX,
        "wrap_exceptions": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    return uri.removeprefix("async+"), options


def _async_twin(uri: str, timeout_s: float) -> tuple[redis.asyncio.ConnectionPool, StorageTypes]:
    """limits' asyncio storage on the same Redis keys as slowapi's: the prediction path's client."""
    plain = uri.removeprefix("async+")
    # Our own pool, for the same timeouts as slowapi's client, and closed on shutdown.
    pool = redis.asyncio.ConnectionPool.from_url(
        plain, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    options: dict[str, Any] = {
        "implementation": "redispy",
        "connection_pool": pool,
        "wrap_exceptions": True,
        "key_prefix": _KEY_PREFIX,
    }
    return pool, storage_from_string(f"async+{plain}", **options)


def _exhausted(
    key: KeyRecord, scope: KeyScope, item: limits.RateLimitItem, state: RateLimitState, now: float
) -> ResourceExhausted:
    """The prediction path's 429, worded as slowapi's handler words the routes' one."""
    retry_after = state.retry_after(now)
    return ResourceExhausted(
        f"Rate limit exceeded: {item} for API key {key.id} ({scope.value}); retry in {retry_after} s",
        headers={**state.headers(), "Retry-After": str(retry_after)},
    )
