"""Feedback and deployment routes: rewards for answered requests; rollout, status, rollback, history."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import InvalidInput
from gateway.auth.authorization import requires
from gateway.auth.scopes import KeyScope
from gateway.registry.audit import AuditEntry
from gateway.rest.api_doc import Operation, documented
from gateway.rest.drift import default_window
from gateway.rest.json_body import parse_body
from gateway.rest.responses import ModelResponse
from gateway.rest.state import gateway_state
from gateway.routing.deployment_status import DeploymentStatus
from gateway.routing.guard import GuardSpec
from gateway.routing.policies import PolicySpec
from gateway.routing.router import Router


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Feedback(_Body):
    request_id: str = Field(min_length=1, max_length=128)
    reward: float


class Rollout(_Body):
    policy: PolicySpec
    guard: GuardSpec = Field(default_factory=GuardSpec)
    reason: str = Field(default="", max_length=1000)


class Rollback(_Body):
    to: str | None = Field(default=None, max_length=32)
    reason: str = Field(default="", max_length=1000)


class Promote(_Body):
    version: str = Field(min_length=1, max_length=32)
    reason: str = Field(default="", max_length=1000)


class FeedbackReceipt(BaseModel):
    """A reward was counted for the version that answered ``request_id``."""

    request_id: str
    model: str
    version: str
    counted: bool


class History(BaseModel):
    """Every deployment and registry change of one model, newest first."""

    model: str
    events: list[AuditEntry]


def _change(summary: str, body: type[_Body]) -> Operation:
    """A deployment change's contract: its body in, the deployment's status out."""
    return Operation(summary, answer=DeploymentStatus, errors=(400, 404, 409, 413, 503), body=body)


def _router(request: Request) -> Router:
    router = gateway_state(request).router
    assert router is not None
    return router


def _actor(request: Request) -> str:
    return f"key:{request.state.api_key.id}"


@documented(
    Operation(
        "A reward in [0, 1] for a routed request, by its X-Request-Id (counted once)",
        answer=FeedbackReceipt,
        errors=(400, 404, 409, 413, 503),
        body=Feedback,
    )
)
@requires(KeyScope.FEEDBACK, model_param="model")
async def feedback(request: Request) -> Response:
    body = await parse_body(request, Feedback)
    if not math.isfinite(body.reward):
        raise InvalidInput("reward must be a finite number between 0 and 1")
    model = request.path_params["model"]
    version = await _router(request).feedback(model, body.request_id, body.reward)
    state = gateway_state(request)
    state.metrics.rewards.labels(model, version).inc(body.reward)
    state.series.reward(model, version, body.reward)
    state.prediction_logs.reward(model, version, body.request_id, body.reward)
    return ModelResponse(
        FeedbackReceipt(request_id=body.request_id, model=model, version=version, counted=True)
    )


@documented(
    Operation(
        "Deployment status: arms, traffic, rewards, errors, latency, guard",
        answer=DeploymentStatus,
        errors=(404, 503),
    )
)
@requires(KeyScope.ADMIN)
async def status(request: Request) -> Response:
    model = request.path_params["model"]
    status = await _router(request).status(model)
    drift = gateway_state(request).drift
    window = default_window(list(drift.windows))
    candidates = [arm.version for arm in status.arms if not arm.stable and arm.role != "shadow"]
    compared = [await drift.between(model, status.stable, version, window) for version in candidates]
    status.arms_drift = [arms for arms in compared if arms is not None]
    return ModelResponse(status)


@documented(
    _change(
        "Start a rollout (pinned, canary, shadow, epsilon-greedy, ucb1, thompson) with its guard", Rollout
    )
)
@requires(KeyScope.ADMIN)
async def rollout(request: Request) -> Response:
    body = await parse_body(request, Rollout)
    model = request.path_params["model"]
    await _router(request).rollout(model, body.policy, body.guard, _actor(request), body.reason)
    return ModelResponse(await _router(request).status(model))


@documented(
    _change(
        "Return to what served before the last change (409 when nothing came before), or send all "
        "traffic to the version named; atomically",
        Rollback,
    )
)
@requires(KeyScope.ADMIN)
async def rollback(request: Request) -> Response:
    body = await parse_body(request, Rollback)
    model = request.path_params["model"]
    await _router(request).rollback(model, body.to, _actor(request), body.reason)
    return ModelResponse(await _router(request).status(model))


@documented(_change("Make a loaded (staged) version live: all traffic that names no version", Promote))
@requires(KeyScope.ADMIN)
async def promote(request: Request) -> Response:
    body = await parse_body(request, Promote)
    model = request.path_params["model"]
    await _router(request).promote(model, body.version, _actor(request), body.reason)
    return ModelResponse(await _router(request).status(model))


@documented(Operation("Every deployment and registry change of a model", answer=History, errors=(404,)))
@requires(KeyScope.ADMIN)
async def history(request: Request) -> Response:
    model = request.path_params["model"]
    events = await gateway_state(request).registry.audit_events(model=model, limit=1000)
    return ModelResponse(History(model=model, events=[event.entry() for event in events]))


def routes() -> list[Route]:
    return [
        Route("/v1/models/{model}/feedback", feedback, methods=["POST"]),
        Route("/v1/admin/deployments/{model}", status, methods=["GET"]),
        Route("/v1/admin/deployments/{model}", rollout, methods=["PUT"]),
        Route("/v1/admin/deployments/{model}/rollback", rollback, methods=["POST"]),
        Route("/v1/admin/deployments/{model}/promote", promote, methods=["POST"]),
        Route("/v1/admin/deployments/{model}/history", history, methods=["GET"]),
    ]
