"""The gateway application: routes, middleware order, and the lifespan that wires the parts.

Middleware, outermost first (Starlette's own ServerErrorMiddleware and ExceptionMiddleware
wrap these; errors become ``{"error": ...}`` with the status the error carries):

1. ``RequestIdMiddleware``: every response, errors included, carries ``X-Request-Id``.
2. Authentication, scope and model checks, then the per-key rate limit (slowapi's Limiter at
   ``app.state.limiter``), run inside each endpoint through
   ``gateway.auth.authorization.requires`` (health and metrics have none), so an unauthenticated
   request never consumes a rate-limit slot and the limit is keyed by API key.
3. Metrics are recorded by the prediction endpoints themselves (model and version known there).

Predictions take a fast path around that stack (``GatewayApp``): a POST that matches a
prediction route (``PredictionRoutes.claim``) goes straight to its ASGI endpoint with the same
three steps done in one frame: request id, the endpoint's own auth/rate limit/metrics, and
errors answered through the same ``error_response`` as the exception handlers. The middleware
frames and Starlette's router walk cost about a fifth of the gateway's CPU per prediction. The
routes stay in the route table, so the OpenAPI document, the auth-surface tests and 405s (any
other method) are unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from core.errors import MdeployError, NotFound
from core.tensor_batch import Tensors
from gateway import console
from gateway.auth.authorization import Auth
from gateway.backends import BackendPool
from gateway.catalog import ServedVersion
from gateway.database.engine import Database, open_gateway_database
from gateway.database.notifications import NoNotifications, Notifications, PostgresNotifications
from gateway.dataplane import AnswerListener, DataPlane
from gateway.db import open_database
from gateway.drift.alerts import AlertStore
from gateway.drift.monitor import DriftMonitor, StoredVersion
from gateway.drift.shared import DatabaseBuckets, RedisBuckets, SharedBuckets
from gateway.drift.watch import DriftWatch
from gateway.drift.windows import windows_of
from gateway.grpc_api.server import start_grpc_listener
from gateway.leadership import Leadership, default_leadership
from gateway.metrics import Metrics
from gateway.predictionlog.control import PredictionLogs
from gateway.predictionlog.folder import FOLDER_NAME, LogFolder
from gateway.predictionlog.log import LogCounters, PredictionLog
from gateway.registry.evaluations import EvaluationStore
from gateway.registry.service import REGISTRY_CHANNEL, Registry
from gateway.registry.stores import package_store, session_liveness
from gateway.releases import Releases
from gateway.rest import (
    admin_deployments,
    admin_keys,
    admin_packages,
    admin_releases,
    drift,
    inference,
    models,
    openapi,
    prediction_logs,
    samples,
    series,
    triton_extensions,
)
from gateway.rest.request_id import HEADER as REQUEST_ID_HEADER
from gateway.rest.request_id import RequestIdMiddleware, assign_request_id, sending_request_id
from gateway.rest.responses import EXCEPTION_HANDLERS, error_response
from gateway.routing.deployments import DEPLOYMENTS_CHANNEL, DeploymentStore
from gateway.routing.ledger import DatabaseLedger, Ledger, RedisLedger
from gateway.routing.router import Router
from gateway.routing.stats import BufferedStats, DatabaseStats, RedisStats, StatsStore
from gateway.settings import GatewaySettings
from gateway.state import GatewayState
from gateway.timeseries.series import SeriesStore
from gateway.webhooks import WebhookSender

log = logging.getLogger(__name__)

KEY_EXPIRY_AUDIT_S = 10.0
"""How often keys that expired are written to the audit log."""


class GatewayApp(Starlette):
    """Starlette, with prediction requests sent straight to their endpoints (module docstring)."""

    def __init__(self, *, predictions: inference.PredictionRoutes, **options: Any) -> None:
        super().__init__(**options)
        self._predictions = predictions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._predictions.claim(scope) if scope["type"] == "http" else None
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        # The endpoint reads the same headers and puts the request id on its answer.
        request_id = assign_request_id(scope, inference.first_headers(scope).get(REQUEST_ID_HEADER))
        try:
            await endpoint(scope, receive, send)
        except MdeployError as error:
            answer = error_response(error.http_status, error.message, error.headers)
            await answer(scope, receive, sending_request_id(send, request_id))
        except Exception:
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            answer = error_response(500, "internal error; see the gateway log")
            await answer(scope, receive, sending_request_id(send, request_id))


def all_routes(predictions: inference.PredictionRoutes | None = None) -> list[BaseRoute]:
    # Starlette tries routes in order: predictions first, they are most of the traffic.
    return [
        *(predictions or inference.PredictionRoutes()).routes,
        *triton_extensions.routes(),
        *models.routes(),
        *admin_keys.routes(),
        *admin_packages.routes(),
        *admin_deployments.routes(),
        *admin_releases.routes(),
        *drift.routes(),
        *prediction_logs.routes(),
        *series.routes(),
        *samples.routes(),
        *openapi.routes(),
    ]


def create_app(
    settings: GatewaySettings, *, leadership: Leadership | None = None, shared_ports: bool = False
) -> GatewayApp:
    """A gateway for ``settings``; its parts start and stop with the ASGI lifespan.

    ``leadership`` says when this process runs the singleton work (default: always, the only
    process); ``shared_ports``: other worker processes listen on the same ports (SO_REUSEPORT).
    """
    predictions = inference.PredictionRoutes()
    leader = leadership or default_leadership(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # The schema's migrations run here.
        database = await open_gateway_database(
            settings.database_url, lambda: open_database(settings.database_path)
        )
        metrics = Metrics()
        pool = BackendPool(
            settings.backends,
            settings.backend_timeout_s,
            settings.health_interval_s,
            tls=settings.backend_tls,
        )
        registry = await Registry.open(
            settings,
            database,
            pool,
            store=package_store(settings, database),
            liveness=session_liveness(settings, database),
        )

        def on_batch(served: ServedVersion, rows: int) -> None:
            metrics.batch_rows.labels(served.name, served.version).observe(rows)

        router = _router(settings, database, registry, metrics, leader)
        url = settings.shared_state_url
        shared_buckets: SharedBuckets = RedisBuckets(url) if url else DatabaseBuckets(database)
        monitor = DriftMonitor(
            functools.partial(_stored_version, registry),
            settings.drift_sample_rate,
            windows=windows_of(settings.drift_windows),
            shared=shared_buckets,
            publish_s=settings.drift_publish_s,
            on_dropped=metrics.drift_dropped.inc,
        )
        alerts = AlertStore(database)
        webhooks = (
            WebhookSender(
                settings.webhook_secret, on_result=lambda result: metrics.webhooks.labels(result).inc()
            )
            if settings.webhook_secret
            else None
        )
        watch = DriftWatch(
            monitor,
            alerts,
            functools.partial(_served_versions, registry),
            check_s=settings.drift_check_s,
            webhooks=webhooks,
        )
        metrics.watch_drift(lambda: watch.scores)
        logs = _prediction_logs(settings, database, registry, metrics)
        series_store = SeriesStore(
            shared_buckets,
            publish_s=settings.drift_publish_s,
            served=functools.partial(_served_versions, registry),  # unloaded versions' series are dropped
        )
        dataplane = DataPlane(
            registry,
            pool,
            settings,
            on_batch,
            router=router,
            on_shadow=lambda model, version, result: metrics.shadow.labels(model, version, result).inc(),
            on_answer=_answer_listeners(
                monitor.observe if settings.drift_sample_rate > 0 else None, logs.log.observe
            ),
            on_outcome=series_store.record,
        )
        metrics.watch(pool, dataplane.batcher_stats, router.traffic_shares)
        notifications = _notifications(settings, database)
        app.state.notifications = notifications  # for any part that caches what other processes change
        app.state.auth = Auth.from_settings(settings, database, metrics.rate_limited, notifications)
        app.state.limiter = app.state.auth.limiter.slowapi  # where slowapi's 429 handler looks
        evaluations = EvaluationStore(settings.data_dir / "evalsets")
        releases = Releases(registry, router, dataplane, evaluations, database, settings.max_eval_rows)
        app.state.gateway = GatewayState(
            settings,
            pool,
            registry,
            dataplane,
            metrics,
            registry,
            router,
            releases,
            monitor,
            alerts,
            logs,
            series_store,
        )
        predictions.bind(app.state.auth, app.state.gateway)
        # Other hosts' pushes, deletes and deployment changes take effect here as they commit.
        notifications.subscribe(REGISTRY_CHANNEL, registry.changed_elsewhere)
        notifications.subscribe(DEPLOYMENTS_CHANNEL, router.changed_elsewhere)
        await notifications.start()
        await leader.start()
        await pool.start()
        await registry.start(leader)
        await router.start()
        monitor.start()
        series_store.start()
        await logs.start()
        watch.start()
        expiries = asyncio.create_task(
            app.state.auth.keys.audit_expiries_every(KEY_EXPIRY_AUDIT_S, when=lambda: leader.is_leader)
        )
        listener = None
        if settings.grpc_port:
            listener = await start_grpc_listener(
                settings, app.state.auth, app.state.gateway, reuse_port=shared_ports
            )
        # What exists now (modules, app, settings) lives as long as the process: keep it out of
        # the cyclic collector, whose full passes over it paused requests for tens of ms.
        gc.collect()
        gc.freeze()
        log.info("gateway ready with %d inference server(s)", len(settings.backends))
        try:
            yield
        finally:
            if listener is not None:
                await listener.stop(settings.shutdown_grace_s)
            expiries.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiries
            await router.close()
            await watch.close()
            await monitor.close()
            await series_store.close()
            if webhooks is not None:
                await webhooks.aclose()
            await shared_buckets.aclose()
            await registry.close()
            await dataplane.close()
            await logs.close()
            await router.stats.aclose()
            await router.ledger.aclose()
            await pool.close()
            await app.state.auth.aclose()
            await notifications.close()
            await leader.close()
            await database.close()

    return GatewayApp(
        predictions=predictions,
        routes=[*all_routes(predictions), *console.routes()],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )


def _notifications(settings: GatewaySettings, database: Database) -> Notifications:
    """Changes committed by gateway processes on other hosts, told as they commit (PostgreSQL); on
    SQLite the processes share one host and see changes through the data folder."""
    if database.backend == "postgresql" and settings.database_url is not None:
        return PostgresNotifications(settings.database_url)
    return NoNotifications()


def _answer_listeners(*listeners: AnswerListener | None) -> AnswerListener | None:
    """One listener that tells each of ``listeners`` (those not None); None when there are none."""
    chosen = [listener for listener in listeners if listener is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def tell_all(
        served: ServedVersion, inputs: Mapping[str, np.ndarray], outputs: Tensors, request_id: str
    ) -> None:
        for listener in chosen:
            listener(served, inputs, outputs, request_id)

    return tell_all


def _prediction_logs(
    settings: GatewaySettings, database: Database, registry: Registry, metrics: Metrics
) -> PredictionLogs:
    """Per-model prediction logs in the data folder, set in the database, counted in metrics."""
    counters = LogCounters(
        written=lambda model, kind, rows: metrics.prediction_log_rows.labels(model, kind).inc(rows),
        dropped=lambda model, reason, rows: metrics.prediction_log_dropped.labels(model, reason).inc(rows),
        rotated=lambda model, files: metrics.prediction_log_rotated.labels(model).inc(files),
    )
    return PredictionLogs(
        database,
        PredictionLog(LogFolder(settings.data_dir / FOLDER_NAME), counters=counters),
        check_model=registry.model_summary,
        refresh_s=settings.deployment_refresh_s,
        max_export_rows=settings.prediction_log_max_export_rows,
        max_export_bytes=settings.prediction_log_max_export_bytes,
    )


def _served_versions(registry: Registry) -> list[tuple[str, str]]:
    return [
        (name, served.version) for name in registry.model_names() for served in registry.served_versions(name)
    ]


async def _stored_version(registry: Registry, model: str, version: str) -> StoredVersion:
    """A loaded or deleted version's manifest and package file, for its reference profile."""
    if not version.isdecimal():
        raise NotFound(f"model '{model}' has no version {version!r}")
    record = await registry.version_record(model, int(version))
    return StoredVersion(record.manifest, await registry.package_path(model, int(version)))


def _router(
    settings: GatewaySettings,
    database: Database,
    registry: Registry,
    metrics: Metrics,
    leader: Leadership,
) -> Router:
    """Deployments in the database; bandit statistics and the feedback ledger in Redis when shared."""
    store: StatsStore
    ledger: Ledger
    if settings.shared_state_url:
        store = RedisStats(settings.shared_state_url)
        ledger = RedisLedger(settings.shared_state_url, settings.feedback_ttl_s)
    else:
        store = DatabaseStats(database)
        ledger = DatabaseLedger(
            database,
            settings.feedback_ttl_s,
            settings.feedback_max_entries,
            sweeps=lambda: leader.is_leader,
        )
    return Router(
        DeploymentStore(database),
        registry,
        BufferedStats(store),
        ledger,
        refresh_s=settings.deployment_refresh_s,
        seed=settings.routing_seed,
        on_rollback=lambda model, kind: metrics.rollbacks.labels(model, kind).inc(),
        on_route=lambda model, version: metrics.routed.labels(model, version).inc(),
    )
