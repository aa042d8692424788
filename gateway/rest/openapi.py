"""The OpenAPI 3.1 document of the gateway, served at ``/openapi.json``, built from the app itself.

Paths and path parameters come from the route table, security from the scope ``requires`` put on
each endpoint, and everything else from the endpoint's ``Operation`` (``gateway.rest.api_doc``):
its answer and body models become ``components/schemas`` through pydantic. Every route must
declare an operation; a route without one fails the document's construction (and its test).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from core import __version__
from gateway.auth.authorization import required_scope
from gateway.rest.api_doc import Operation, Param, documented, operation_of
from gateway.rest.responses import ErrorAnswer, JSONResponse

JSON = "application/json"
_REF = "#/components/schemas/{model}"
_AUTH_ERRORS = (401, 403, 429)
_SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]
# Versions are numbers the registry gives out (1, 2, ...); any other text is a 404.
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {"version": {"type": "string", "pattern": "^[0-9]+$"}}


def endpoints(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, Route]]:
    """(path, lower-case method, route) for every endpoint route, descending into mounts; no HEAD."""
    for route in routes:
        if isinstance(route, Mount):
            yield from endpoints(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield prefix + route.path, method.lower(), route


def _operation(route: Route, path: str) -> Operation:
    operation = operation_of(route.endpoint)
    if operation is None:
        raise LookupError(f"route {path} declares no Operation: decorate its endpoint with @documented")
    return operation


def _models(routes: list[tuple[str, str, Route]]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    """Every model the operations name: answers as serialised, bodies as validated."""
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(ErrorAnswer, "serialization"): None}
    for path, _, route in routes:
        operation = _operation(route, path)
        for answer in (operation.answer, *operation.also.values()):
            if answer is not None:
                wanted[(answer, "serialization")] = None
        if operation.body is not None:
            wanted[(operation.body, "validation")] = None
    return list(wanted)


class _Schemas:
    """The models' JSON schemas, their definitions gathered under ``components/schemas``."""

    def __init__(self, models: list[tuple[type[BaseModel], JsonSchemaMode]]) -> None:
        self._refs, definitions = models_json_schema(models, ref_template=_REF)
        self.components: dict[str, Any] = dict(definitions.get("$defs", {}))

    def answer(self, model: type[BaseModel]) -> dict[str, Any]:
        return dict(self._refs[(model, "serialization")])

    def body(self, model: type[BaseModel]) -> dict[str, Any]:
        return dict(self._refs[(model, "validation")])


def _responses(operation: Operation, guarded: bool, schemas: _Schemas) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    ok: dict[str, Any] = {"description": operation.summary}
    if operation.answer is not None:
        ok["content"] = {JSON: {"schema": schemas.answer(operation.answer)}}
    elif operation.answer_media is not None:
        ok["content"] = {operation.answer_media: {"schema": {"type": "string"}}}
    responses[str(operation.status)] = ok
    for status, model in operation.also.items():
        responses[str(status)] = {"description": "OK", "content": {JSON: {"schema": schemas.answer(model)}}}
    error = {"description": "Error", "content": {JSON: {"schema": schemas.answer(ErrorAnswer)}}}
    for status in (*operation.errors, *(_AUTH_ERRORS if guarded else ())):
        responses[str(status)] = error
    return responses


def _parameters(route: Route, path: str, operation: Operation) -> list[dict[str, Any]]:
    names = list(route.param_convertors)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(name, {"type": "string"})}
        for name in names
    ]
    for param in operation.params:
        if param.unversioned_only and "version" in names:
            continue
        parameters.append(_parameter(param))
    return parameters


def _parameter(param: Param) -> dict[str, Any]:
    described = {"name": param.name, "in": param.where, "required": False, "schema": dict(param.schema)}
    if param.description:
        described["description"] = param.description
    return described


def _path_item(route: Route, path: str, schemas: _Schemas) -> dict[str, Any]:
    operation = _operation(route, path)
    scope = required_scope(route.endpoint)
    described: dict[str, Any] = {
        "summary": operation.summary,
        "responses": _responses(operation, scope is not None, schemas),
        "security": _SECURITY if scope is not None else [],
    }
    if scope is not None:
        described["description"] = f"Needs an API key with the `{scope.value}` scope."
    parameters = _parameters(route, path, operation)
    if parameters:
        described["parameters"] = parameters
    content: dict[str, Any] = {}
    if operation.body is not None:
        content[JSON] = {"schema": schemas.body(operation.body)}
    content.update({media: {"schema": dict(schema)} for media, schema in operation.body_media.items()})
    if content:
        described["requestBody"] = {"required": True, "content": content}
    return described


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of an app with these routes."""
    found = list(endpoints(routes))
    schemas = _Schemas(_models(found))
    paths: dict[str, dict[str, Any]] = {}
    for path, method, route in found:
        paths.setdefault(path, {})[method] = _path_item(route, path, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mdeploy gateway",
            "version": __version__,
            "description": "JSON prediction API (KServe v2, TF-Serving v1), model metadata, administration.",
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": schemas.components,
        },
        "paths": paths,
    }


@documented(Operation("This document", answer_media=JSON))
async def openapi_json(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "openapi", None) is None:  # the routes are fixed once the app is built
        state.openapi = document(request.app.routes)
    return JSONResponse(state.openapi)


def routes() -> list[Route]:
    return [Route("/openapi.json", openapi_json, methods=["GET"])]
