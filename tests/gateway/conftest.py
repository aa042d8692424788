"""Shared fixtures of the gateway tests: key stores, a real redis-server, a real uvicorn server."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from core.errors import NotFound
from gateway.auth import Auth, KeyRecord, KeyScope, KeyStore, RateLimiter, requires
from gateway.database.engine import Database, SQLiteDatabase
from gateway.database.notifications import PostgresNotifications
from gateway.db import open_database
from gateway.rest import admin_keys
from gateway.rest.responses import EXCEPTION_HANDLERS
from tests.conftest import close_any

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]
DEFAULT_LIMITS = {
    KeyScope.PREDICT: "1000/minute",
    KeyScope.FEEDBACK: "1000/minute",
    KeyScope.ADMIN: "1000/minute",
}


# ---- time and key stores ----


class Clock:
    """A clock the test moves forward: expiry is tested without waiting."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def database_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "registry.sqlite3"


@pytest.fixture
async def key_store(database_path: Path, clock: Clock) -> AsyncIterator[KeyStore]:
    """Keys in the data folder's SQLite database (the guard's tests); ``keys`` is on both back ends."""
    database = SQLiteDatabase.open(open_database(database_path))
    store = KeyStore(database, clock=clock)
    yield store
    store.close()
    await close_any(database)


@asynccontextmanager
async def key_store_of(database: Database, url: str, clock: Clock | None = None) -> AsyncIterator[KeyStore]:
    """A gateway process's key store on ``database`` (at ``url``): on PostgreSQL with notifications
    of its own, as the gateway makes it."""
    notifications = PostgresNotifications(url) if database.backend == "postgresql" else None
    store = KeyStore(database, notifications, clock=clock or time.time)
    if notifications is not None:  # after the store subscribed: it is listening once this returns
        await notifications.start()
    try:
        yield store
    finally:
        store.close()
        if notifications is not None:
            await notifications.close()


@pytest.fixture
async def keys(database: Database, database_url: str, clock: Clock) -> AsyncIterator[KeyStore]:
    """A key store on each back end: a fresh SQLite file, then a real PostgreSQL."""
    async with key_store_of(database, database_url, clock) as store:
        yield store


async def verified(keys: KeyStore, key: str | None) -> KeyRecord:
    """``keys.verify``'s answer, awaited when it had to be looked up."""
    answer = keys.verify(key)
    return answer if isinstance(answer, KeyRecord) else await answer


# ---- a real redis-server ----


# ---- a small app guarded like the gateway's ----


@requires(KeyScope.PREDICT, model_param="model")
async def predict(request: Request) -> Response:
    return JSONResponse({"model": request.path_params["model"], "key": request.state.api_key.id})


@requires(KeyScope.FEEDBACK, model_param="model")
async def feedback(request: Request) -> Response:
    raise NotFound(f"no prediction {request.query_params.get('id')!r} to give feedback on")


async def live(request: Request) -> Response:
    return PlainTextResponse("ok")


def guarded_app(auth: Auth | None = None, lifespan: Lifespan | None = None) -> Starlette:
    """Predict, feedback and admin-key routes, plus an unguarded health route."""
    routes = [
        Route("/v2/health/live", live),
        Route("/v1/models/{model}:predict", predict, methods=["POST"]),
        Route("/v1/models/{model}/feedback", feedback, methods=["POST"]),
        *admin_keys.routes(),
    ]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    if auth is not None:
        app.state.auth = auth
        app.state.limiter = auth.limiter.slowapi
    return app


@pytest.fixture
async def auth(key_store: KeyStore) -> AsyncIterator[Auth]:
    limiter = RateLimiter("memory://", DEFAULT_LIMITS, fail_open=False)
    yield Auth(key_store, limiter)
    await limiter.aclose()


@pytest.fixture
async def http(auth: Auth) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of :func:`guarded_app`."""
    transport = httpx.ASGITransport(app=guarded_app(auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


# ---- the same app under a real uvicorn (for the CLI and the HTTP client) ----


@dataclass
class LiveGateway:
    url: str
    database_path: Path


def _lifespan_app(database_path: Path) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = SQLiteDatabase.open(open_database(database_path))
        auth = Auth(KeyStore(database), RateLimiter("memory://", DEFAULT_LIMITS, fail_open=False))
        app.state.auth, app.state.limiter = auth, auth.limiter.slowapi
        yield
        await auth.aclose()
        await close_any(database)

    return guarded_app(lifespan=lifespan)


@pytest.fixture
def live_gateway(database_path: Path) -> Iterator[LiveGateway]:
    """uvicorn in a thread on a free port, sharing ``database_path`` with the test."""
    config = uvicorn.Config(
        _lifespan_app(database_path), host="127.0.0.1", port=0, log_level="warning", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield LiveGateway(f"http://127.0.0.1:{port}", database_path)
    server.should_exit = True
    thread.join(timeout=10)


# ---- model packages (registry tests) ----


@pytest.fixture(scope="session")
def demo_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """digits-sklearn.pkg and digits-keras.pkg from examples/digits.py, built once per session."""
    from examples.digits import build_demo_packages
    from tests.modelpkg.zips import FIXED_TIME

    paths = build_demo_packages(tmp_path_factory.mktemp("demo-packages"), created_at=FIXED_TIME)
    return {path.stem: path for path in paths}
