"""Model and server metadata, readiness, and health (health and metrics need no key)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core import __version__
from core.signature import TensorSpec
from gateway.auth.authorization import requires
from gateway.auth.scopes import KeyScope
from gateway.catalog import ServedVersion
from gateway.rest.responses import JSONResponse, error_response
from gateway.rest.state import gateway_state

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]


def _tensor(spec: TensorSpec) -> dict[str, object]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _metadata(served: ServedVersion, versions: list[str]) -> dict[str, object]:
    return {
        "name": served.name,
        "versions": versions,
        "platform": served.platform,
        "inputs": [_tensor(s) for s in served.signature.inputs],
        "outputs": [_tensor(s) for s in served.signature.outputs],
    }


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    healthy = gateway_state(request).pool.healthy()
    if not healthy:
        return error_response(503, "no inference server is available")
    return JSONResponse({"ready": True, "backends": len(healthy)})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(gateway_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@requires(KeyScope.PREDICT)
async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "mdeploy", "version": __version__, "extensions": EXTENSIONS})


@requires(KeyScope.PREDICT, model_param="model")
async def model_metadata(request: Request) -> Response:
    catalog = gateway_state(request).catalog
    name = request.path_params["model"]
    served = catalog.resolve(name, request.path_params.get("version"))
    return JSONResponse(_metadata(served, [v.version for v in catalog.served_versions(name)]))


@requires(KeyScope.PREDICT, model_param="model")
async def model_ready(request: Request) -> Response:
    state = gateway_state(request)
    served = state.catalog.resolve(request.path_params["model"], request.path_params.get("version"))
    if not state.pool.healthy():
        return error_response(400, f"model '{served.name}' is not ready: no inference server is available")
    return JSONResponse({"name": served.name, "version": served.version, "ready": True})


@requires(KeyScope.PREDICT)
async def list_models(request: Request) -> Response:
    catalog = gateway_state(request).catalog
    models = []
    for name in catalog.model_names():
        versions = catalog.served_versions(name)
        default = catalog.resolve(name, None)
        models.append(
            {"name": name, "versions": [v.version for v in versions], "default_version": default.version}
        )
    return JSONResponse({"models": models})


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
