"""Model and server metadata, readiness, and health (health and metrics need no key)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core import __version__
from core.errors import InvalidInput
from core.signature import TensorSpec
from gateway.auth.authorization import requires
from gateway.auth.scopes import KeyScope
from gateway.catalog import ServedVersion
from gateway.rest.api_doc import Operation, Param, documented
from gateway.rest.responses import ModelResponse, error_response
from gateway.rest.state import gateway_state
from gateway.search import MAX_QUERY, SearchQuery, VersionMatch, search
from gateway.serving import Serving

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    """KServe v2 datatype: FP32, INT64, BYTES..."""
    shape: list[int]
    """-1 for a dimension of any size (the batch dimension first)."""


class ModelMetadata(BaseModel):
    """KServe v2 model metadata."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    serving: Serving | None = None
    """mdeploy's addition, when no version is named: which version a request naming none gets,
    or the arms of a rollout and their shares."""


class ServerMetadata(BaseModel):
    """KServe v2 server metadata."""

    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool
    backends: int
    """Healthy inference servers."""


class ModelReadiness(BaseModel):
    name: str
    version: str
    ready: bool


class ServingModel(BaseModel):
    """A model clients can call, with the versions they can name."""

    name: str
    versions: list[str]
    default_version: str | None
    """The version every request naming none gets; null while a rollout splits them (``serving``)."""
    serving: Serving
    matches: list[VersionMatch] | None = None
    """With a search (``q``, ``framework``, ``input``, ``data_sha256``): the versions that matched."""


class ServingModels(BaseModel):
    """``GET /v1/models``: every model clients can call now."""

    models: list[ServingModel]


def _tensor(spec: TensorSpec) -> TensorMetadata:
    return TensorMetadata(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))


def _metadata(served: ServedVersion, versions: list[str]) -> ModelMetadata:
    return ModelMetadata(
        name=served.name,
        versions=versions,
        platform=served.platform,
        inputs=[_tensor(s) for s in served.signature.inputs],
        outputs=[_tensor(s) for s in served.signature.outputs],
    )


@documented(Operation("Liveness", answer=Live))
async def live(request: Request) -> Response:
    return ModelResponse(Live(live=True))


@documented(Operation("Readiness: an inference server is available", answer=Ready, errors=(503,)))
async def ready(request: Request) -> Response:
    healthy = gateway_state(request).pool.healthy()
    if not healthy:
        return error_response(503, "no inference server is available")
    return ModelResponse(Ready(ready=True, backends=len(healthy)))


@documented(Operation("Prometheus metrics", answer_media="text/plain"))
async def metrics(request: Request) -> Response:
    return Response(generate_latest(gateway_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@documented(Operation("Server metadata", answer=ServerMetadata))
@requires(KeyScope.PREDICT)
async def server_metadata(request: Request) -> Response:
    return ModelResponse(ServerMetadata(name="mdeploy", version=__version__, extensions=EXTENSIONS))


@documented(
    Operation(
        "Model metadata (of its default version, or the one named)", answer=ModelMetadata, errors=(404,)
    )
)
@requires(KeyScope.PREDICT, model_param="model")
async def model_metadata(request: Request) -> Response:
    state = gateway_state(request)
    name, version = request.path_params["model"], request.path_params.get("version")
    served = state.catalog.resolve(name, version or await state.router.live_version(name))
    answer = _metadata(served, [v.version for v in state.catalog.served_versions(name)])
    if version is None:
        answer.serving = await state.router.serving(name)
    return ModelResponse(answer)


@documented(Operation("Model readiness", answer=ModelReadiness, errors=(400, 404)))
@requires(KeyScope.PREDICT, model_param="model")
async def model_ready(request: Request) -> Response:
    state = gateway_state(request)
    served = state.catalog.resolve(request.path_params["model"], request.path_params.get("version"))
    if not state.pool.healthy():
        return error_response(400, f"model '{served.name}' is not ready: no inference server is available")
    return ModelResponse(ModelReadiness(name=served.name, version=served.version, ready=True))


SEARCH_PARAMS = (
    Param("q", {"type": "string", "maxLength": MAX_QUERY}, description="words, all of which must match"),
    Param("framework", {"type": "string", "maxLength": 32}),
    Param("input", {"type": "string", "maxLength": 256}, description="an input tensor's name"),
    Param(
        "data_sha256", {"type": "string", "maxLength": 64}, description="a training data file's sha256 prefix"
    ),
)


@documented(
    Operation(
        "The models this key may call and what serves each; with q (and filters), those whose "
        "loaded versions match, in names, descriptions, tags, frameworks, signatures and provenance",
        answer=ServingModels,
        errors=(400,),
        params=SEARCH_PARAMS,
    )
)
@requires(KeyScope.PREDICT)
async def list_models(request: Request) -> Response:
    state = gateway_state(request)
    key = request.state.api_key
    params = request.query_params
    try:
        query = SearchQuery(
            text=params.get("q", ""),
            framework=params.get("framework") or None,
            input=params.get("input") or None,
            data_sha256=params.get("data_sha256") or None,
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise InvalidInput(f"{first['loc'][0]}: {first['msg']}") from None
    query.check()
    found: dict[str, list[VersionMatch]] | None = None
    if not query.empty:
        loaded = [r for m in await state.registry.models() for r in m.versions if key.allows_model(r.model)]
        roles = {(r.model, str(r.version)): await state.router.role(r.model, str(r.version)) for r in loaded}
        found = search(query, loaded, lambda model, version: roles.get((model, version)) or "staged")
    models = []
    for name in state.catalog.model_names():
        if not key.allows_model(name) or (found is not None and name not in found):
            continue
        serving = await state.router.serving(name)
        versions = [v.version for v in state.catalog.served_versions(name)]
        models.append(
            ServingModel(
                name=name,
                versions=versions,
                default_version=serving.live_version,
                serving=serving,
                matches=found[name] if found is not None else None,
            )
        )
    return ModelResponse(ServingModels(models=models))


def routes() -> list[Route]:
    return [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{model}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
    ]
