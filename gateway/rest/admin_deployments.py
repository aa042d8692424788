"""Feedback and deployment routes: rewards for answered requests; rollout, status, rollback, history."""

from __future__ import annotations

import math
from typing import TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import InvalidInput
from gateway.auth.authorization import requires
from gateway.auth.scopes import KeyScope
from gateway.registry.audit import AuditEntry
from gateway.rest.api_doc import Operation, documented
from gateway.rest.inference import read_body
from gateway.rest.responses import ModelResponse
from gateway.rest.state import gateway_state
from gateway.routing.deployment_status import DeploymentStatus
from gateway.routing.guard import GuardSpec
from gateway.routing.policies import PolicySpec
from gateway.routing.router import Router

MAX_BODY = 64 * 1024


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


Body = TypeVar("Body", bound=_Body)


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


async def _parse(request: Request, kind: type[Body]) -> Body:
    body = await read_body(request.receive, request.headers.get("content-length"), MAX_BODY)
    try:
        return kind.model_validate(orjson.loads(body or b"{}"))
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"the request body is not valid JSON: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}") from None


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
    body = await _parse(request, Feedback)
    if not math.isfinite(body.reward):
        raise InvalidInput("reward must be a finite number between 0 and 1")
    model = request.path_params["model"]
    version = await _router(request).feedback(model, body.request_id, body.reward)
    gateway_state(request).metrics.rewards.labels(model, version).inc(body.reward)
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
    return ModelResponse(await _router(request).status(request.path_params["model"]))


@documented(
    _change(
        "Start a rollout (pinned, canary, shadow, epsilon-greedy, ucb1, thompson) with its guard", Rollout
    )
)
@requires(KeyScope.ADMIN)
async def rollout(request: Request) -> Response:
    body = await _parse(request, Rollout)
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
    body = await _parse(request, Rollback)
    model = request.path_params["model"]
    await _router(request).rollback(model, body.to, _actor(request), body.reason)
    return ModelResponse(await _router(request).status(model))


@documented(_change("Make a loaded (staged) version live: all traffic that names no version", Promote))
@requires(KeyScope.ADMIN)
async def promote(request: Request) -> Response:
    body = await _parse(request, Promote)
    model = request.path_params["model"]
    await _router(request).promote(model, body.version, _actor(request), body.reason)
    return ModelResponse(await _router(request).status(model))


@documented(Operation("Every deployment and registry change of a model", answer=History, errors=(404,)))
@requires(KeyScope.ADMIN)
async def history(request: Request) -> Response:
    model = request.path_params["model"]
    events = gateway_state(request).registry.audit_events(model=model, limit=1000)
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
