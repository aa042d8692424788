"""The gateway application: routes, middleware order, and the lifespan that wires the parts.

Middleware, outermost first (Starlette's own ServerErrorMiddleware and ExceptionMiddleware
wrap these; errors become ``{"error": ...}`` with the status the error carries):

1. ``RequestIdMiddleware``: every response, errors included, carries ``X-Request-Id``.
2. Authentication, scope and model checks, then the per-key rate limit, run inside each
   endpoint through ``gateway.auth.guard.requires`` (health and metrics have none), so an
   unauthenticated request never consumes a rate-limit slot and the limit is keyed by API key.
3. Metrics are recorded by the prediction endpoints themselves (model and version known there).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from gateway.auth.guard import Auth
from gateway.backends import BackendPool
from gateway.catalog import ServedVersion
from gateway.dataplane import DataPlane
from gateway.db import open_database
from gateway.metrics import Metrics
from gateway.registry.service import Registry
from gateway.rest import admin_keys, admin_packages, inference, models, openapi
from gateway.rest.request_id import RequestIdMiddleware
from gateway.rest.responses import EXCEPTION_HANDLERS
from gateway.rest.state import GatewayState
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def all_routes() -> list[BaseRoute]:
    return [
        *models.routes(),
        *inference.routes(),
        *admin_keys.routes(),
        *admin_packages.routes(),
        *openapi.routes(),
    ]


def create_app(settings: GatewaySettings) -> Starlette:
    """A gateway for ``settings``; its parts start and stop with the ASGI lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        connection = open_database(settings.database_path)
        metrics = Metrics()
        pool = BackendPool(settings.backends, settings.backend_timeout_s, settings.health_interval_s)
        registry = Registry.open(settings, connection, pool)

        def on_batch(served: ServedVersion, rows: int) -> None:
            metrics.batch_rows.labels(served.name, served.version).observe(rows)

        dataplane = DataPlane(registry, pool, settings, on_batch)
        metrics.watch(pool, dataplane.batcher_stats)
        app.state.auth = Auth.from_settings(settings, connection, metrics.rate_limited)
        app.state.gateway = GatewayState(settings, pool, registry, dataplane, metrics, registry)
        await pool.start()
        await registry.start()
        log.info("gateway ready with %d inference server(s)", len(settings.backends))
        try:
            yield
        finally:
            await registry.close()
            await dataplane.close()
            await pool.close()
            await app.state.auth.aclose()
            connection.close()

    return Starlette(
        routes=all_routes(),
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
