"""Release gates over HTTP (scope ``admin``): evaluate a version, and a model's default gates.

An evaluation set is an ``.npz`` body (``application/octet-stream``) of the model's inputs by
name and optionally ``__labels__``, at most ``max_eval_bytes``. Gates are repeated ``gate``
query parameters such as ``accuracy>=0.95`` (``core.gates``).
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import InvalidInput
from gateway.auth import KeyScope, requires
from gateway.evaluation import Evaluation
from gateway.registry.evaluations import GateConfig
from gateway.rest.api_doc import Operation, Param, documented
from gateway.rest.inference import read_body
from gateway.rest.query import flag
from gateway.rest.responses import ModelResponse
from gateway.rest.state import gateway_state

FLAG = {"type": "boolean"}
GATE = Param(
    "gate",
    {"type": "array", "items": {"type": "string", "maxLength": 100}},
    description="METRIC OP NUMBER, e.g. accuracy>=0.95; repeat for several",
)
NPZ = {"application/octet-stream": {"type": "string", "format": "binary"}}


class Evaluations(BaseModel):
    """A version's evaluations, newest first."""

    evaluations: list[Evaluation]


class Cleared(BaseModel):
    model: str
    cleared: bool


def _version(request: Request) -> str:
    version = request.path_params["version"]
    if not (version.isdecimal() and version.isascii()) or len(version) > 18:
        raise InvalidInput(f"version must be a version number such as 2, not {version!r}")
    return str(int(version))


async def _data(request: Request) -> bytes:
    limit = gateway_state(request).settings.max_eval_bytes
    data = await read_body(request.receive, request.headers.get("content-length"), limit)
    if not data:
        raise InvalidInput(
            "send the evaluation set as the body: an .npz of the model's inputs (and __labels__)"
        )
    return data


def _actor(request: Request) -> str:
    return f"key:{request.state.api_key.id}"


@documented(
    Operation(
        "Evaluate a loaded version on an .npz set through the serving path; judge gates; promote only "
        "when every gate passes (promote=true); recorded on the version unless record=false",
        answer=Evaluation,
        errors=(400, 404, 413, 503),
        body_media=NPZ,
        params=(GATE, Param("promote", FLAG), Param("record", FLAG)),
    )
)
@requires(KeyScope.ADMIN)
async def evaluate(request: Request) -> Response:
    state = gateway_state(request)
    record = "record" not in request.query_params or flag(request, "record")
    result = await state.releases.evaluate(
        request.path_params["model"],
        _version(request),
        await _data(request),
        request.query_params.getlist("gate"),
        _actor(request),
        promote=flag(request, "promote"),
        record=record,
    )
    return ModelResponse(result)


@documented(
    Operation("A version's recorded evaluations, newest first", answer=Evaluations, errors=(400, 404))
)
@requires(KeyScope.ADMIN)
async def evaluations(request: Request) -> Response:
    report = await gateway_state(request).releases.version_report(
        request.path_params["model"], int(_version(request))
    )
    return ModelResponse(Evaluations(evaluations=report.evaluations))


@documented(
    Operation(
        "Set a model's default gates and their evaluation set (.npz body): every later push is judged",
        answer=GateConfig,
        errors=(400, 404, 413, 503),
        body_media=NPZ,
        params=(GATE, Param("auto_promote", FLAG)),
    )
)
@requires(KeyScope.ADMIN)
async def set_gates(request: Request) -> Response:
    gates = request.query_params.getlist("gate")
    if not gates:
        raise InvalidInput("give at least one gate, e.g. gate=accuracy>=0.95")
    config = await gateway_state(request).releases.set_gates(
        request.path_params["model"],
        gates,
        flag(request, "auto_promote"),
        await _data(request),
        _actor(request),
    )
    return ModelResponse(config)


@documented(Operation("A model's default gates", answer=GateConfig, errors=(404,)))
@requires(KeyScope.ADMIN)
async def get_gates(request: Request) -> Response:
    return ModelResponse(await gateway_state(request).releases.gates(request.path_params["model"]))


@documented(Operation("Remove a model's default gates", answer=Cleared, errors=(404,)))
@requires(KeyScope.ADMIN)
async def clear_gates(request: Request) -> Response:
    model = request.path_params["model"]
    await gateway_state(request).releases.clear_gates(model, _actor(request))
    return ModelResponse(Cleared(model=model, cleared=True))


def routes() -> list[Route]:
    return [
        Route("/v1/admin/models/{model}/versions/{version}/evaluations", evaluate, methods=["POST"]),
        Route("/v1/admin/models/{model}/versions/{version}/evaluations", evaluations, methods=["GET"]),
        Route("/v1/admin/models/{model}/gates", set_gates, methods=["PUT"]),
        Route("/v1/admin/models/{model}/gates", get_gates, methods=["GET"]),
        Route("/v1/admin/models/{model}/gates", clear_gates, methods=["DELETE"]),
    ]
