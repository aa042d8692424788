"""A model's prediction log over HTTP (scope ``admin``): turn it on, change, off, stats, export.

``PUT`` takes ``{"sample_rate": 0.1, "max_mb": 1024}`` (a field left out keeps its current value,
or the default); ``DELETE`` turns logging off and with ``purge=true`` deletes the files; the
export answers a Parquet file of the rows logged from ``since`` until ``until`` seconds ago
(``gateway.predictionlog.rows`` describes its columns).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import InvalidInput
from gateway.auth import KeyScope, requires
from gateway.predictionlog.control import MAX_MB, MAX_SINCE_S, MEDIA_TYPE, MIN_MB, LogStatus
from gateway.rest.api_doc import Operation, Param, documented
from gateway.rest.json_body import parse_body
from gateway.rest.query import flag
from gateway.rest.responses import ModelResponse
from gateway.rest.state import gateway_state

_MESSAGES = {
    "sample_rate": "sample_rate must be a number more than 0 and at most 1 (0.1 logs one request in ten)",
    "max_mb": f"max_mb must be a whole number of MiB from {MIN_MB} to {MAX_MB} (100 GiB)",
}


class LogSetting(BaseModel):
    """How a model's prediction log samples and how much disk it may take."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: float | None = Field(default=None, gt=0, le=1)
    """Share of answered requests logged (default: the current one, or 1)."""
    max_mb: int | None = Field(default=None, ge=MIN_MB, le=MAX_MB)
    """Cap of the model's log folder in MiB; the oldest files go first (default: current, or 1024)."""


def _seconds(request: Request, name: str, default: float | None) -> float:
    text = request.query_params.get(name)
    if text is None or text == "":
        if default is None:
            raise InvalidInput(f"give {name}: how many seconds back the export starts, e.g. {name}=3600")
        return default
    try:
        return float(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a number of seconds, such as 3600, not {text[:40]!r}") from None


def _actor(request: Request) -> str:
    return f"key:{request.state.api_key.id}"


@documented(
    Operation(
        "Log a model's answered requests (inputs, outputs, version, request id, rewards) for "
        "retraining, or change its sample rate and cap",
        answer=LogStatus,
        errors=(400, 404, 413),
        body=LogSetting,
    )
)
@requires(KeyScope.ADMIN)
async def enable(request: Request) -> Response:
    setting = await parse_body(request, LogSetting, _MESSAGES)
    logs = gateway_state(request).prediction_logs
    status = await logs.enable(
        request.path_params["model"], setting.sample_rate, setting.max_mb, _actor(request)
    )
    return ModelResponse(status)


@documented(
    Operation(
        "A model's prediction log: its setting, files, rows and time span", answer=LogStatus, errors=(404,)
    )
)
@requires(KeyScope.ADMIN)
async def status(request: Request) -> Response:
    return ModelResponse(await gateway_state(request).prediction_logs.status(request.path_params["model"]))


@documented(
    Operation(
        "Stop logging a model's requests; purge=true deletes its log files too",
        answer=LogStatus,
        errors=(400, 404),
        params=(Param("purge", {"type": "boolean"}),),
    )
)
@requires(KeyScope.ADMIN)
async def disable(request: Request) -> Response:
    logs = gateway_state(request).prediction_logs
    answer = await logs.disable(request.path_params["model"], flag(request, "purge"), _actor(request))
    return ModelResponse(answer)


@documented(
    Operation(
        "The rows logged from `since` until `until` seconds ago as one Parquet file, each with its "
        "request's latest reward (413 past the export limits: ask for less time)",
        answer_media=MEDIA_TYPE,
        errors=(400, 404, 413),
        params=(
            Param(
                "since",
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SINCE_S},
                description="seconds back the export starts, e.g. 3600 (required)",
            ),
            Param(
                "until",
                {"type": "number", "minimum": 0, "maximum": MAX_SINCE_S},
                description="seconds back the export ends (default 0: now)",
            ),
        ),
    )
)
@requires(KeyScope.ADMIN)
async def export(request: Request) -> Response:
    model = request.path_params["model"]
    since = _seconds(request, "since", None)
    until = _seconds(request, "until", 0.0)
    exported = await gateway_state(request).prediction_logs.export(model, since, until)
    headers = {
        "Content-Disposition": f'attachment; filename="{model}.parquet"',
        "X-Mdeploy-Rows": str(exported.rows),
        "X-Mdeploy-Rewarded": str(exported.rewarded),
    }
    return Response(exported.data, media_type=MEDIA_TYPE, headers=headers)


def routes() -> list[Route]:
    return [
        Route("/v1/admin/models/{model}/logs", enable, methods=["PUT"]),
        Route("/v1/admin/models/{model}/logs", status, methods=["GET"]),
        Route("/v1/admin/models/{model}/logs", disable, methods=["DELETE"]),
        Route("/v1/admin/models/{model}/logs/export", export, methods=["GET"]),
    ]
