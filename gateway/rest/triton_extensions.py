"""Triton's HTTP model-repository and statistics extensions, which tritonclient.http calls.

``GET /v2/models[/{m}[/versions/{v}]]/stats``, ``POST /v2/repository/index`` and
``POST /v2/repository/models/{m}/load|unload``: the same answers, scopes and registry actions as
the gRPC API's RPCs (``gateway.model_repository``).
"""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel, ConfigDict, RootModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import InvalidInput
from gateway import model_repository
from gateway.auth.authorization import requires
from gateway.auth.scopes import KeyScope
from gateway.model_repository import IndexEntry
from gateway.rest.api_doc import Operation, documented
from gateway.rest.inference import read_body
from gateway.rest.responses import ModelResponse
from gateway.rest.state import gateway_state

MAX_BODY = 4096


class Duration(BaseModel):
    count: int = 0
    ns: int = 0
    """Total nanoseconds of the ``count`` events."""


class InferStatistics(BaseModel):
    success: Duration = Duration()
    fail: Duration = Duration()
    queue: Duration = Duration()
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()
    cache_hit: Duration = Duration()
    cache_miss: Duration = Duration()


class BatchStatistics(BaseModel):
    batch_size: int
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()


class VersionStatistics(BaseModel):
    name: str
    version: str
    last_inference: int = 0
    """Milliseconds since the epoch of the last inference."""
    inference_count: int = 0
    execution_count: int = 0
    """Backend executions: fewer than inferences when requests were batched."""
    inference_stats: InferStatistics = InferStatistics()
    batch_stats: list[BatchStatistics] = []


class Statistics(BaseModel):
    """Triton's statistics extension, summed over the gateway's inference servers."""

    model_stats: list[VersionStatistics]


class Index(RootModel[list[IndexEntry]]):
    """Triton's repository index: every version a key may see."""


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ready: bool = False
    """Only versions that are live."""


class RepositoryChange(BaseModel):
    model: str
    action: str
    """load or unload."""


@documented(Operation("Inference statistics of the models the key may use", answer=Statistics, errors=(503,)))
@requires(KeyScope.PREDICT)
async def all_statistics(request: Request) -> Response:
    answer = await model_repository.statistics(gateway_state(request), request.state.api_key)
    return ModelResponse(Statistics.model_validate(MessageToDict(answer, preserving_proto_field_name=True)))


@documented(
    Operation("Inference statistics of a model (or one version)", answer=Statistics, errors=(404, 503))
)
@requires(KeyScope.PREDICT, model_param="model")
async def model_statistics(request: Request) -> Response:
    params = request.path_params
    answer = await model_repository.statistics(
        gateway_state(request), request.state.api_key, params["model"], params.get("version", "")
    )
    return ModelResponse(Statistics.model_validate(MessageToDict(answer, preserving_proto_field_name=True)))


@documented(
    Operation(
        "The model repository's versions (admin keys: all; others: their models)",
        answer=Index,
        errors=(400,),
        body=IndexRequest,
    )
)
@requires(KeyScope.ADMIN, KeyScope.PREDICT)
async def repository_index(request: Request) -> Response:
    body = await read_body(request.receive, request.headers.get("content-length"), MAX_BODY)
    try:
        wanted = IndexRequest.model_validate_json(body) if body.strip() else IndexRequest()
    except ValidationError as error:
        first = error.errors()[0]
        raise InvalidInput(
            f'repository index request: {first["msg"]}; send {{}} or {{"ready": true}}'
        ) from None
    entries = await model_repository.index(
        gateway_state(request).registry, request.state.api_key, wanted.ready
    )
    return ModelResponse(Index(entries))


@documented(
    Operation(
        "Serve a model again: its newest deleted version, restored (audited)",
        answer=RepositoryChange,
        errors=(404, 409),
    )
)
@requires(KeyScope.ADMIN)
async def load_model(request: Request) -> Response:
    name = request.path_params["model"]
    await gateway_state(request).releases.load(name, f"key:{request.state.api_key.id}")
    return ModelResponse(RepositoryChange(model=name, action="load"))


@documented(
    Operation(
        "Stop serving a model: delete its loaded versions (audited)",
        answer=RepositoryChange,
        errors=(404, 409),
    )
)
@requires(KeyScope.ADMIN)
async def unload_model(request: Request) -> Response:
    name, actor = request.path_params["model"], f"key:{request.state.api_key.id}"
    await gateway_state(request).releases.unload(name, actor, "HTTP")
    return ModelResponse(RepositoryChange(model=name, action="unload"))


def routes() -> list[Route]:
    # Before the metadata routes: /v2/models/stats is not a model called "stats".
    return [
        Route("/v2/models/stats", all_statistics, methods=["GET"]),
        Route("/v2/models/{model}/stats", model_statistics, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/stats", model_statistics, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{model}/load", load_model, methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", unload_model, methods=["POST"]),
    ]
