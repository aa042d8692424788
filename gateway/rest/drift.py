"""``GET /v1/models/{model}/drift``: how far a version's live traffic moved from its reference;
``/v1/admin/models/{model}/drift/alert``: the model's drift thresholds (``gateway.drift.alerts``).

Admin scope: the answer describes other clients' inputs (their distribution, not their rows).
Without ``version``, the version that requests naming none get; ``window`` is one of the
gateway's drift windows (5m, 1h and 24h unless ``drift_windows`` says otherwise).
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import InvalidInput, NotFound
from gateway.auth.authorization import requires
from gateway.auth.scopes import KeyScope
from gateway.drift.alerts import AlertRule, VersionAlertState, check_webhook
from gateway.drift.report import DriftReport
from gateway.rest.api_doc import Operation, Param, documented
from gateway.rest.json_body import parse_body
from gateway.rest.responses import ModelResponse
from gateway.rest.state import gateway_state

DEFAULT_WINDOW = "1h"


@documented(
    Operation(
        "Drift of a version's live inputs and outputs from its reference profile (PSI, KS, classes)",
        answer=DriftReport,
        errors=(400, 404),
        params=(
            Param("version", {"type": "string", "maxLength": 32}),
            Param("window", {"type": "string", "pattern": "^[0-9]{1,6}[smhd]$"}),
        ),
    )
)
@requires(KeyScope.ADMIN)
async def drift(request: Request) -> Response:
    state = gateway_state(request)
    model = request.path_params["model"]
    version = request.query_params.get("version") or await state.router.live_version(model)
    state.catalog.resolve(model, version)  # NotFound names the loaded versions
    window = request.query_params.get("window") or default_window(list(state.drift.windows))
    return ModelResponse(await state.drift.report(model, version, window))


def default_window(windows: list[str]) -> str:
    return DEFAULT_WINDOW if DEFAULT_WINDOW in windows else windows[0]


class AlertRequest(BaseModel):
    when: str = Field(max_length=400)
    """Conditions, any of which fires the alert: ``psi>0.2``, ``ks>0.1``, ``score>0.1``,
    ``share>0.3``, ``js>0.2``."""
    min_rows: int = Field(default=500, ge=1)
    """Live rows the window must hold before the alert fires or clears."""
    window: str | None = Field(default=None, max_length=8)
    """A drift window of the gateway (default: the shortest)."""
    webhook: str | None = Field(default=None, max_length=2048)
    """http(s) URL that gets a signed JSON POST when a version's alert fires or clears."""


class AlertStatus(BaseModel):
    rule: AlertRule
    versions: list[VersionAlertState]
    """Versions whose alert was judged since the rule was set."""


class AlertCleared(BaseModel):
    model: str
    cleared: bool


def _actor(request: Request) -> str:
    return f"key:{request.state.api_key.id}"


@documented(
    Operation(
        "Set a model's drift alert: conditions, window, minimum rows, and a signed webhook",
        answer=AlertStatus,
        errors=(400, 404, 413),
        body=AlertRequest,
    )
)
@requires(KeyScope.ADMIN)
async def set_alert(request: Request) -> Response:
    state = gateway_state(request)
    model = request.path_params["model"]
    body = await parse_body(request, AlertRequest)
    await state.registry.model_summary(model)  # NotFound for an unknown model
    windows = list(state.drift.windows)
    window = body.window or windows[0]
    if window not in windows:
        raise InvalidInput(
            f"window must be one of this gateway's drift windows, {', '.join(windows)}, not {window!r}"
        )
    if body.webhook is not None:
        check_webhook(body.webhook)
        if not state.settings.webhook_secret:
            raise InvalidInput(
                "this gateway signs webhooks with MDEPLOY_WEBHOOK_SECRET, which is not set: set it "
                "(16+ characters) and restart, or leave the webhook out"
            )
    rule = await state.drift_alerts.set(
        model, body.when, body.min_rows, window, body.webhook, _actor(request)
    )
    return ModelResponse(AlertStatus(rule=rule, versions=[]))


@documented(Operation("A model's drift alert and each version's state", answer=AlertStatus, errors=(404,)))
@requires(KeyScope.ADMIN)
async def get_alert(request: Request) -> Response:
    alerts = gateway_state(request).drift_alerts
    model = request.path_params["model"]
    rule = await alerts.rule(model)
    if rule is None:
        raise NotFound(f"model '{model}' has no drift alert (set one with PUT)")
    return ModelResponse(AlertStatus(rule=rule, versions=await alerts.states(model)))


@documented(Operation("Remove a model's drift alert", answer=AlertCleared, errors=(404,)))
@requires(KeyScope.ADMIN)
async def clear_alert(request: Request) -> Response:
    model = request.path_params["model"]
    if not await gateway_state(request).drift_alerts.clear(model, _actor(request)):
        raise NotFound(f"model '{model}' has no drift alert")
    return ModelResponse(AlertCleared(model=model, cleared=True))


def routes() -> list[Route]:
    alert = "/v1/admin/models/{model}/drift/alert"
    return [
        Route("/v1/models/{model}/drift", drift, methods=["GET"]),
        Route(alert, set_alert, methods=["PUT"]),
        Route(alert, get_alert, methods=["GET"]),
        Route(alert, clear_alert, methods=["DELETE"]),
    ]
