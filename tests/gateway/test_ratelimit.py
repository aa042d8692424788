"""RateLimiter on memory and on a real redis-server, including Redis outages and recovery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from slowapi.errors import RateLimitExceeded
from starlette.requests import Request

from core.errors import InvalidInput, ResourceExhausted, Unavailable
from gateway.auth import KeyRecord, KeyScope, RateLimiter, RateLimitState
from tests.gateway.conftest import DEFAULT_LIMITS
from tests.services import RedisServer

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

PROBE_S = 0.2
MakeLimiter = Callable[..., RateLimiter]


def key(key_id: str = "0123456789abcdef", rate_limit: str | None = None) -> KeyRecord:
    return KeyRecord(
        id=key_id,
        name="",
        scopes=frozenset(KeyScope),
        models=None,
        rate_limit=rate_limit,
        created_at=datetime.now(UTC),
        expires_at=None,
        revoked_at=None,
    )


@pytest.fixture
async def make_limiter() -> AsyncIterator[MakeLimiter]:
    made: list[RateLimiter] = []

    def make(storage: str = "memory://", *, fail_open: bool = False, **defaults: str) -> RateLimiter:
        limits = {**DEFAULT_LIMITS, **{KeyScope(scope): limit for scope, limit in defaults.items()}}
        limiter = RateLimiter(storage, limits, fail_open, probe_interval_s=PROBE_S)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


async def hits(limiter: RateLimiter, record: KeyRecord, scope: KeyScope, count: int) -> list[RateLimitState]:
    return [await limiter.hit(record, scope) for _ in range(count)]


async def test_memory_allows_the_limit_then_answers_429_with_retry_after(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(predict="3/minute")
    states = await hits(limiter, key(), KeyScope.PREDICT, 3)
    assert [state.remaining for state in states] == [2, 1, 0]
    assert states[0].headers()["X-RateLimit-Limit"] == "3"
    with pytest.raises(ResourceExhausted, match="3 per 1 minute") as refused:
        await limiter.hit(key(), KeyScope.PREDICT)
    headers = refused.value.headers
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["X-RateLimit-Reset"]) >= time.time()
    assert refused.value.http_status == 429


async def test_a_keys_own_limit_overrides_the_scope_default(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(predict="100/minute")
    await hits(limiter, key(rate_limit="2/minute"), KeyScope.PREDICT, 2)
    with pytest.raises(ResourceExhausted):
        await limiter.hit(key(rate_limit="2/minute"), KeyScope.PREDICT)


async def test_counters_are_kept_per_key_and_per_scope(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(predict="1/minute", feedback="1/minute")
    await limiter.hit(key("aaaaaaaaaaaaaaaa"), KeyScope.PREDICT)
    await limiter.hit(key("aaaaaaaaaaaaaaaa"), KeyScope.FEEDBACK)
    await limiter.hit(key("bbbbbbbbbbbbbbbb"), KeyScope.PREDICT)
    with pytest.raises(ResourceExhausted):
        await limiter.hit(key("aaaaaaaaaaaaaaaa"), KeyScope.PREDICT)


def test_bad_defaults_and_storages_are_refused_at_start() -> None:
    with pytest.raises(InvalidInput, match="scope predict"):
        RateLimiter("memory://", {**DEFAULT_LIMITS, KeyScope.PREDICT: "100/fortnight"}, False)
    with pytest.raises(InvalidInput, match="memory:// or redis://"):
        RateLimiter("memcached://127.0.0.1:11211", DEFAULT_LIMITS, False)


async def test_redis_counts_are_shared_by_limiters_of_different_processes(
    make_limiter: MakeLimiter, redis_server: RedisServer
) -> None:
    # Two limiters on one Redis stand for two gateway processes.
    first, second = make_limiter(redis_server.uri), make_limiter(redis_server.uri)
    record = key(rate_limit="4/minute")
    await hits(first, record, KeyScope.PREDICT, 2)
    assert (await second.hit(record, KeyScope.PREDICT)).remaining == 1
    await first.hit(record, KeyScope.PREDICT)
    with pytest.raises(ResourceExhausted) as refused:
        await second.hit(record, KeyScope.PREDICT)
    assert int(refused.value.headers["Retry-After"]) >= 1


async def until_allowed(limiter: RateLimiter, record: KeyRecord, timeout_s: float = 10) -> RateLimitState:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await limiter.hit(record, KeyScope.PREDICT)
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(PROBE_S / 2)


class ListeningPort:
    """A TCP listener that accepts and counts connections, and answers nothing."""

    def __init__(self, port: int) -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self._socket.listen(16)
        self._socket.setblocking(False)
        self._accepted: list[socket.socket] = []

    def connections(self) -> int:
        with contextlib.suppress(BlockingIOError):
            while True:
                self._accepted.append(self._socket.accept()[0])
        return len(self._accepted)

    def __enter__(self) -> ListeningPort:
        return self

    def __exit__(self, *exc: object) -> None:
        for connection in self._accepted:
            connection.close()
        self._socket.close()


async def until_counted(limiter: RateLimiter, record: KeyRecord, timeout_s: float = 10) -> RateLimitState:
    """Fail-open hits report the full allowance until Redis counts again."""
    deadline = time.monotonic() + timeout_s
    while (state := await limiter.hit(record, KeyScope.PREDICT)).remaining == state.limit:
        assert time.monotonic() < deadline, "the limiter did not recover"
        await asyncio.sleep(PROBE_S / 2)
    return state


async def test_redis_outage_fails_closed_with_503_then_recovers(
    make_limiter: MakeLimiter, redis_server: RedisServer
) -> None:
    limiter = make_limiter(redis_server.uri, fail_open=False)
    record = key(rate_limit="5/minute")
    await limiter.hit(record, KeyScope.PREDICT)
    redis_server.stop()
    with pytest.raises(Unavailable, match="rate-limit storage") as refused:
        await limiter.hit(record, KeyScope.PREDICT)
    assert refused.value.http_status == 503
    assert "Retry-After" in refused.value.headers
    # Within the probe interval no call goes to Redis: a listener on its port sees no connection.
    with ListeningPort(redis_server.port) as port:
        with pytest.raises(Unavailable):
            await limiter.hit(record, KeyScope.PREDICT)
        assert port.connections() == 0
    redis_server.start()
    assert (await until_allowed(limiter, record)).remaining == 4  # a restarted Redis starts counting anew


async def test_redis_outage_fails_open_warning_once_then_recovers(
    make_limiter: MakeLimiter, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = make_limiter(redis_server.uri, fail_open=True)
    record = key(rate_limit="5/minute")
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="gateway.auth.ratelimit"):
        for _ in range(3):  # several probes: the outage is logged once
            state = await limiter.hit(record, KeyScope.PREDICT)
            assert state.remaining == 5
            await asyncio.sleep(PROBE_S * 1.2)
        redis_server.start()
        assert (await until_counted(limiter, record)).remaining < 5
    messages = [record.getMessage() for record in caplog.records]
    assert sum("unreachable" in message for message in messages) == 1
    assert sum("reachable again" in message for message in messages) == 1


def route_request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/v1/models", "headers": []})


async def test_slowapi_routes_and_the_prediction_path_share_redis_counters(
    make_limiter: MakeLimiter, redis_server: RedisServer
) -> None:
    limiter = make_limiter(redis_server.uri)
    record = key(rate_limit="3/minute")
    assert (await limiter.hit(record, KeyScope.PREDICT)).remaining == 2  # limits' asyncio client
    assert (await limiter.hit_route(route_request(), record, KeyScope.PREDICT)).remaining == 1  # slowapi's
    await limiter.hit(record, KeyScope.PREDICT)
    refused = route_request()
    with pytest.raises(RateLimitExceeded, match="3 per 1 minute"):
        await limiter.hit_route(refused, record, KeyScope.PREDICT)
    assert refused.state.view_rate_limit.state.remaining == 0


async def test_slowapi_routes_follow_the_outage_setting(
    make_limiter: MakeLimiter, redis_server: RedisServer
) -> None:
    closed, open_ = make_limiter(redis_server.uri), make_limiter(redis_server.uri, fail_open=True)
    record = key(rate_limit="5/minute")
    redis_server.stop()
    with pytest.raises(Unavailable, match="rate-limit storage"):
        await closed.hit_route(route_request(), record, KeyScope.ADMIN)
    assert (await open_.hit_route(route_request(), record, KeyScope.ADMIN)).remaining == 5
    redis_server.start()
