"""Prediction routes: KServe v2 ``/infer`` and TF-Serving v1 ``:predict``. Translate, then delegate."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth.guard import requires
from gateway.auth.scopes import Scope
from gateway.dataplane import InferenceRequest
from gateway.rest import v1_codec, v2_codec
from gateway.rest.request_id import request_id_of
from gateway.rest.state import gateway_state
from mdeploy.errors import InvalidInput, MdeployError, PayloadTooLarge

# Requests with the same key get the same version under canary and shadow policies.
ROUTING_KEY = "x-routing-key"
MAX_ROUTING_KEY = 256


def routing_key(request: Request) -> str | None:
    key = request.headers.get(ROUTING_KEY)
    if key is not None and len(key) > MAX_ROUTING_KEY:
        raise InvalidInput(
            f"the X-Routing-Key header is {len(key)} characters long; at most {MAX_ROUTING_KEY}"
        )
    return key


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _version(request: Request) -> str | None:
    version = request.path_params.get("version")
    return str(version) if version is not None else None


def _observe(request: Request, route: str, version: str, code: int, started: float) -> None:
    metrics = gateway_state(request).metrics
    model = request.path_params["model"]
    metrics.requests.labels(model, version, route, str(code)).inc()
    metrics.latency.labels(model, route).observe(time.perf_counter() - started)


@requires(Scope.PREDICT, model_param="model")
async def v2_infer(request: Request) -> Response:
    started = time.perf_counter()
    state = gateway_state(request)
    try:
        body = await read_body(request, state.settings.max_body_bytes)
        parsed = v2_codec.parse_request(body, request.headers.get(v2_codec.HEADER_LENGTH))
        inference = InferenceRequest(
            request.path_params["model"],
            _version(request),
            parsed.inputs,
            parsed.outputs,
            request_id_of(request.scope),
            routing_key(request),
        )
        result = await state.dataplane.infer(inference)
    except MdeployError as error:
        _observe(request, "v2", _version(request) or "", error.http_status, started)
        raise
    content, headers = v2_codec.render_response(parsed, result)
    headers["x-model-version"] = result.version
    _observe(request, "v2", result.version, 200, started)
    return Response(content, headers=headers)


@requires(Scope.PREDICT, model_param="model")
async def v1_predict(request: Request) -> Response:
    started = time.perf_counter()
    state = gateway_state(request)
    with_labels = request.query_params.get("labels", "false").lower() in ("1", "true", "yes")
    try:
        body = await read_body(request, state.settings.max_body_bytes)
        # The signature gives the JSON its datatypes (all versions of a model share it).
        served = state.catalog.resolve(request.path_params["model"], _version(request))
        if with_labels and not served.labels:
            raise InvalidInput(
                f"model '{served.name}' version {served.version} has no labels; drop ?labels=true"
            )
        parsed = v1_codec.parse_request(body, served)
        inference = InferenceRequest(
            served.name,
            _version(request),
            parsed.inputs,
            (),
            request_id_of(request.scope),
            routing_key(request),
        )
        result = await state.dataplane.infer(inference)
    except MdeployError as error:
        _observe(request, "v1", _version(request) or "", error.http_status, started)
        raise
    content = v1_codec.render_response(parsed, result, with_labels)
    _observe(request, "v1", result.version, 200, started)
    return Response(content, media_type="application/json", headers={"x-model-version": result.version})


def routes() -> list[Route]:
    return [
        Route("/v2/models/{model}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", v2_infer, methods=["POST"]),
        Route("/v1/models/{model}:predict", v1_predict, methods=["POST"]),
        Route("/v1/models/{model}/versions/{version}:predict", v1_predict, methods=["POST"]),
    ]
