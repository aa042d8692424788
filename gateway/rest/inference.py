"""Prediction routes: KServe v2 ``/infer`` and TF-Serving v1 ``:predict``. Translate, then delegate.

They are most of the traffic, so each is a plain ASGI app: the headers are read once from the
ASGI scope, the body straight from ``receive`` and the answer (with its ``X-Request-Id``) goes
out as two ASGI messages, with no Request/Response objects in between. ``PredictionRoutes``
lets ``gateway.app.GatewayApp`` claim these requests ahead of the middleware stack; the same
routes stay in Starlette's table for everything else (OpenAPI, 405s, an app mounted under a
root path). An error is raised as an ``MdeployError`` and answered through the same
``error_response`` as on every other route. The key is checked (and the rate limit counted)
before the body is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

import numpy as np
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from core.errors import InvalidInput, MdeployError, PayloadTooLarge
from gateway.auth.authorization import SCOPE_ATTRIBUTE, Auth, Grant
from gateway.auth.scopes import KeyScope
from gateway.catalog import ServedVersion
from gateway.dataplane import InferenceRequest, InferenceResult
from gateway.rest import v1_codec, v2_codec
from gateway.rest.api_doc import documented
from gateway.rest.prediction_schemas import V1_OPERATION, V2_OPERATION
from gateway.rest.request_id import HEADER as REQUEST_ID_HEADER
from gateway.rest.request_id import request_id_of
from gateway.state import GatewayState

# Requests with the same key get the same version under canary and shadow policies.
ROUTING_KEY = b"x-routing-key"
MAX_ROUTING_KEY = 256
_V2_HEADER_LENGTH = v2_codec.HEADER_LENGTH.encode()
_JSON = b"application/json"

Headers = Mapping[bytes, bytes]
Protocol = Literal["v1", "v2"]


class ClientGone(Exception):
    """The client disconnected before its body arrived: there is nobody to answer."""


HEADERS_KEY = "mdeploy.headers"
"""Where the fast path leaves ``first_headers`` in the ASGI scope for the endpoint."""


def first_headers(scope: Scope) -> dict[bytes, bytes]:
    """Request headers by lower-case name; the first of repeated ones wins (as Starlette's ``get``)."""
    found: dict[bytes, bytes] | None = scope.get(HEADERS_KEY)
    if found is None:
        found = scope[HEADERS_KEY] = dict(reversed(scope["headers"]))
    return found


def _text(headers: Headers, name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


def routing_key(headers: Headers) -> str | None:
    key = _text(headers, ROUTING_KEY)
    if key is not None and len(key) > MAX_ROUTING_KEY:
        raise InvalidInput(
            f"the X-Routing-Key header is {len(key)} characters long; at most {MAX_ROUTING_KEY}"
        )
    return key


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known (or ``declared``) to be over ``limit`` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclass(slots=True)  # per request: a frozen dataclass costs ~4x to build
class Answer:
    """A prediction's body, its content type, extra headers and the version that answered."""

    content: bytes
    content_type: bytes
    version: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


class PredictionEndpoint:
    """One prediction route (v1 or v2) as an ASGI app; see the module docstring."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self._prepare = _prepare_v1 if protocol == "v1" else _prepare_v2
        self._parts: tuple[Auth, GatewayState] | None = None
        setattr(self, SCOPE_ATTRIBUTE, KeyScope.PREDICT)  # the route table says what it needs
        documented(V1_OPERATION if protocol == "v1" else V2_OPERATION)(self)

    def bind(self, auth: Auth, state: GatewayState) -> None:
        """The app's parts, once its lifespan has made them (else read from the app per request)."""
        self._parts = (auth, state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._parts is not None:
            auth, state = self._parts
        else:
            auth, state = scope["app"].state.auth, scope["app"].state.gateway
        headers = first_headers(scope)
        params = scope["path_params"]
        model: str = params["model"]
        version: str | None = params.get("version")
        client = scope.get("client")
        grant = auth.authorize(
            _text(headers, b"authorization"),
            _text(headers, b"x-api-key"),
            KeyScope.PREDICT,
            model,
            client[0] if client else None,
        )
        if not isinstance(grant, Grant):  # counted elsewhere (Redis): wait for it
            grant = await grant
        scope["state"]["api_key"] = grant.key
        started = time.perf_counter()
        try:
            limit = state.settings.max_body_bytes
            body = await read_body(receive, _text(headers, b"content-length"), limit)
            inputs, outputs, render, served = self._prepare(state, scope, headers, body, model, version)
            inference = InferenceRequest(
                model, version, inputs, outputs, request_id_of(scope), routing_key(headers), served
            )
            answer = render(await state.dataplane.infer(inference))
        except ClientGone:
            return
        except MdeployError as error:
            _observe_error(state, self.protocol, model, version, error.http_status, started)
            error.headers = {**grant.rate.headers(), **error.headers}
            raise
        state.metrics.observe_request(
            model, answer.version, self.protocol, 200, time.perf_counter() - started
        )
        response_headers = [
            (b"content-type", answer.content_type),
            (b"content-length", b"%d" % len(answer.content)),
            (b"x-model-version", answer.version.encode()),
            (REQUEST_ID_HEADER, scope["state"]["request_id"].encode()),
            *answer.headers,
            *grant.rate.raw_headers(),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": answer.content})


Render = Callable[[InferenceResult], Answer]
Prepared = tuple[Mapping[str, np.ndarray], tuple[str, ...], Render, ServedVersion | None]
"""What a front end makes of a body: inputs, the outputs asked for, how to answer, and the
version it resolved if it needed one."""


def _wants_labels(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    if not query:
        return False
    values = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    return values.get("labels", "false").lower() in ("1", "true", "yes")


def _prepare_v1(
    state: GatewayState, scope: Scope, headers: Headers, body: bytes, model: str, version: str | None
) -> Prepared:
    with_labels = _wants_labels(scope)
    # The signature gives the JSON its datatypes (all versions of a model share it).
    served = state.catalog.resolve(model, version)
    if with_labels and not served.labels:
        raise InvalidInput(f"model '{served.name}' version {served.version} has no labels; drop ?labels=true")
    parsed = v1_codec.parse_request(body, served)

    def render(result: InferenceResult) -> Answer:
        return Answer(v1_codec.render_response(parsed, result, with_labels), _JSON, result.version)

    return parsed.inputs, (), render, served


def _prepare_v2(
    state: GatewayState, scope: Scope, headers: Headers, body: bytes, model: str, version: str | None
) -> Prepared:
    parsed = v2_codec.parse_request(body, _text(headers, _V2_HEADER_LENGTH))

    def render(result: InferenceResult) -> Answer:
        content, extra = v2_codec.render_response(parsed, result)
        content_type = extra.pop("content-type").encode()
        return Answer(content, content_type, result.version, _encoded(extra))

    return parsed.inputs, parsed.outputs, render, None


def _encoded(headers: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.lower().encode(), value.encode()) for name, value in headers.items())


def _observe_error(
    state: GatewayState, route: Protocol, model: str, version: str | None, code: int, started: float
) -> None:
    # Labels come from the catalog, never straight from the path: made-up model or version
    # names must not grow the metrics without bound.
    known = model in state.catalog.model_names()
    served = {v.version for v in state.catalog.served_versions(model)} if known else set()
    state.metrics.observe_request(
        model if known else "(unknown)",
        version if version in served else "",
        route,
        code,
        time.perf_counter() - started,
    )


def route_path(scope: Scope) -> str:
    """The path the routes match: without the app's root path, by Starlette's own rule."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    rest = path[len(root) :]
    return rest if rest.startswith("/") or not rest else path


class PredictionRoutes:
    """The four prediction routes, and the gateway's fast test for a request that is one of them.

    The fast test matches with the routes' own compiled paths and convertors, so it claims
    exactly what Starlette's router would send to these endpoints, under any root path.
    """

    _MAX_REMEMBERED = 4096

    def __init__(self) -> None:
        self.v1, self.v2 = PredictionEndpoint("v1"), PredictionEndpoint("v2")
        # path → (endpoint, path parameters): a handful of model paths carry all the traffic.
        self._claimed: dict[str, tuple[PredictionEndpoint, dict[str, object]]] = {}
        self.routes = [
            Route("/v2/models/{model}/infer", self.v2, methods=["POST"]),
            Route("/v2/models/{model}/versions/{version}/infer", self.v2, methods=["POST"]),
            Route("/v1/models/{model}:predict", self.v1, methods=["POST"]),
            Route("/v1/models/{model}/versions/{version}:predict", self.v1, methods=["POST"]),
        ]

    def claim(self, scope: Scope) -> PredictionEndpoint | None:
        """The endpoint of a POST to a prediction path, its path parameters set in ``scope`` as
        Starlette's router would; None for anything else (Starlette routes it: 404, 405, ...)."""
        if scope["method"] != "POST":
            return None
        path = route_path(scope)
        claimed = self._claimed.get(path) or self._match(path)
        if claimed is None:
            return None
        endpoint, params = claimed
        scope["path_params"] = dict(params)
        scope["endpoint"] = endpoint
        scope.setdefault("state", {})
        return endpoint

    def bind(self, auth: Auth, state: GatewayState) -> None:
        self.v1.bind(auth, state)
        self.v2.bind(auth, state)

    def _match(self, path: str) -> tuple[PredictionEndpoint, dict[str, object]] | None:
        for route in self.routes:
            match = route.path_regex.match(path)
            if match is None:
                continue
            convertors = route.param_convertors
            params = {name: convertors[name].convert(value) for name, value in match.groupdict().items()}
            if len(self._claimed) >= self._MAX_REMEMBERED:
                self._claimed.clear()
            endpoint: PredictionEndpoint = route.endpoint  # type: ignore[assignment]
            self._claimed[path] = endpoint, params
            return endpoint, params
        return None
