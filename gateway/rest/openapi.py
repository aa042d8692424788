"""The OpenAPI 3.1 document of the gateway, served at ``/openapi.json``.

Written out rather than generated: the request bodies (v2 tensors, the binary extension,
v1 rows) are richer than Starlette's docstring schemas can say. A test checks that every
route of the application appears here and nothing else does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core import __version__
from gateway.rest import admin_deployments
from gateway.rest.responses import JSONResponse

JSON = "application/json"
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_DATATYPE = {
    "type": "string",
    "enum": [
        "BOOL",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    ],
}
_TENSOR_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "datatype": _DATATYPE,
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["name", "datatype", "shape"],
}
_V2_INPUT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": _DATATYPE,
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
        "data": {"description": "Row-major values, flat or nested; strings for BYTES"},
    },
    "required": ["name", "shape", "datatype"],
}
_V2_REQUEST = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "items": _V2_INPUT, "minItems": 1},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                },
                "required": ["name"],
            },
        },
    },
    "required": ["inputs"],
}
_V2_RESPONSE = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {**_TENSOR_META["properties"], "data": {}, "parameters": {"type": "object"}},  # type: ignore[dict-item]
                "required": ["name", "datatype", "shape"],
            },
        },
    },
    "required": ["model_name", "model_version", "outputs"],
}
_V1_REQUEST = {
    "type": "object",
    "description": "Exactly one of 'instances' (row format) or 'inputs' (columnar format).",
    "properties": {
        "signature_name": {"type": "string"},
        "instances": {"type": "array", "minItems": 1},
        "inputs": {},
    },
}
_V1_RESPONSE = {
    "type": "object",
    "properties": {
        "model_version": {"type": "string"},
        "predictions": {"type": "array"},
        "outputs": {},
        "labels": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["model_version"],
}
_MODEL_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR_META},
        "outputs": {"type": "array", "items": _TENSOR_META},
    },
    "required": ["name", "versions", "platform", "inputs", "outputs"],
}
_KEY = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "scopes": {"type": "array", "items": {"type": "string", "enum": ["predict", "feedback", "admin"]}},
        "models": {"type": ["array", "null"], "items": {"type": "string"}},
        "rate_limit": {"type": ["string", "null"]},
        "expires_at": {"type": ["string", "null"]},
        "created_at": {"type": "string"},
        "revoked_at": {"type": ["string", "null"]},
    },
    "required": ["id", "scopes"],
}
_KEY_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "scopes": {
            "type": "array",
            "items": {"type": "string", "enum": ["predict", "feedback", "admin"]},
            "minItems": 1,
        },
        "models": {"type": ["array", "null"], "items": {"type": "string"}},
        "rate_limit": {"type": ["string", "null"], "examples": ["100/minute"]},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
        "name": {"type": ["string", "null"]},
    },
    "required": ["scopes"],
}
_ANY_OBJECT = {"type": "object"}


def _responses(
    ok: dict[str, Any] | None, *errors: int, ok_status: str = "200", media: str = JSON
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if ok is not None:
        responses[ok_status] = {"description": "OK", "content": {media: {"schema": ok}}}
    for status in (*errors, 401, 403, 429):
        responses[str(status)] = {"description": "Error", "content": {JSON: {"schema": _ERROR}}}
    return responses


# Versions are numbers the registry gives out (1, 2, ...); any other text is a 404.
_PATH_SCHEMAS = {"version": {"type": "string", "pattern": "^[0-9]+$"}}


def _path_params(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(n, {"type": "string"})}
        for n in names
    ]


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    params: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    public: bool = False,
    query: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    parameters = _path_params(*params) + (query or [])
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    operation["security"] = [] if public else [{"apiKey": []}, {"bearer": []}]
    return operation


def _infer_paths() -> dict[str, Any]:
    v2 = _op(
        "KServe v2 inference (JSON, or Triton's binary-data extension)",
        _responses(_V2_RESPONSE, 400, 404, 413, 501, 503, 504),
        body={
            JSON: {"schema": _V2_REQUEST},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    )
    labels = [{"name": "labels", "in": "query", "required": False, "schema": {"type": "boolean"}}]
    v1 = _op(
        "TF-Serving predict (instances rows or inputs columns)",
        _responses(_V1_RESPONSE, 400, 404, 413, 503, 504),
        body={JSON: {"schema": _V1_REQUEST}},
        query=labels,
    )
    routing_key = {
        "name": "X-Routing-Key",
        "in": "header",
        "required": False,
        "description": "Requests with the same key get the same version under canary and shadow policies",
        "schema": {"type": "string", "maxLength": 256},
    }
    header_length = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "description": "Binary-data extension: the byte length of the JSON part; raw tensors follow it",
        "schema": {"type": "integer", "minimum": 0},
    }
    return {
        "/v2/models/{model}/infer": {
            "post": {**v2, "parameters": [*_path_params("model"), routing_key, header_length]}
        },
        "/v2/models/{model}/versions/{version}/infer": {
            "post": {**v2, "parameters": [*_path_params("model", "version"), header_length]}
        },
        "/v1/models/{model}:predict": {
            "post": {**v1, "parameters": [*_path_params("model"), *labels, routing_key]}
        },
        "/v1/models/{model}/versions/{version}:predict": {
            "post": {**v1, "parameters": _path_params("model", "version") + labels}
        },
    }


def _metadata_paths() -> dict[str, Any]:
    ready = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
    listing = {
        "type": "object",
        "properties": {"models": {"type": "array", "items": _ANY_OBJECT}},
        "required": ["models"],
    }
    return {
        "/v2/health/live": {"get": _op("Liveness", {"200": {"description": "Live"}}, public=True)},
        "/v2/health/ready": {
            "get": _op(
                "Readiness: an inference server is available",
                {
                    "200": {"description": "Ready"},
                    "503": {"description": "Not ready", "content": {JSON: {"schema": _ERROR}}},
                },
                public=True,
            )
        },
        "/metrics": {"get": _op("Prometheus metrics", {"200": {"description": "Metrics"}}, public=True)},
        "/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI"}}, public=True)},
        "/v2": {"get": _op("Server metadata", _responses(_ANY_OBJECT))},
        "/v2/models/{model}": {
            "get": _op("Model metadata", _responses(_MODEL_METADATA, 404), params=("model",))
        },
        "/v2/models/{model}/versions/{version}": {
            "get": _op(
                "Model version metadata", _responses(_MODEL_METADATA, 404), params=("model", "version")
            )
        },
        "/v2/models/{model}/ready": {
            "get": _op("Model readiness", _responses(ready, 400, 404), params=("model",))
        },
        "/v2/models/{model}/versions/{version}/ready": {
            "get": _op("Model version readiness", _responses(ready, 400, 404), params=("model", "version"))
        },
        "/v1/models": {"get": _op("Models and their live versions", _responses(listing))},
    }


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _admin_paths() -> dict[str, Any]:
    version = ("model", "version")
    flag = {"type": "boolean"}
    binary = {"type": "string", "format": "binary"}
    key_request = {JSON: {"schema": _KEY_REQUEST}}
    return {
        "/v1/admin/keys": {
            "get": _op("List API keys", _responses({"type": "object"})),
            "post": _op(
                "Create an API key (shown once)",
                _responses(_ANY_OBJECT, 400, 413, ok_status="201"),
                body=key_request,
            ),
        },
        "/v1/admin/keys/{key_id}": {
            "get": _op("One API key", _responses(_KEY, 404), params=("key_id",)),
            "delete": _op("Revoke an API key", _responses(_ANY_OBJECT, 404), params=("key_id",)),
        },
        "/v1/admin/packages": {
            "post": _op(
                "Upload a package (raw body): verify, store, register, deploy (201: created or restored)",
                _responses(_ANY_OBJECT, 400, 409, 413, 422, 503, ok_status="201")
                | {"200": {"description": "Already present", "content": {JSON: {"schema": _ANY_OBJECT}}}},
                body={"application/octet-stream": {"schema": binary}},
            )
        },
        "/v1/admin/models": {
            "get": _op(
                "Models, versions and manifests", _responses(_ANY_OBJECT, 400), query=[_query("all", flag)]
            )
        },
        "/v1/admin/models/{model}": {
            "get": _op(
                "One model, every version (deleted too)", _responses(_ANY_OBJECT, 404), params=("model",)
            )
        },
        "/v1/admin/models/{model}/versions/{version}": {
            "get": _op("One version with its manifest", _responses(_ANY_OBJECT, 404), params=version),
            "delete": _op(
                "Retire a version (409 for the default version unless forced)",
                _responses(_ANY_OBJECT, 400, 404, 409),
                params=version,
                query=[_query("force", flag), _query("reason", {"type": "string", "maxLength": 1000})],
            ),
        },
        "/v1/admin/models/{model}/versions/{version}/package": {
            "get": _op(
                "Download the package",
                _responses(binary, 404, media="application/octet-stream"),
                params=version,
            )
        },
        "/v1/admin/audit": {
            "get": _op(
                "The audit log, newest first",
                _responses(_ANY_OBJECT, 400),
                query=[
                    _query("model", {"type": "string"}),
                    _query("limit", {"type": "integer", "minimum": 1}),
                    _query("before", {"type": "integer", "minimum": 0}),
                ],
            )
        },
    }


_SCHEMAS = "#/components/schemas/{model}"


def _body_schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """``model``'s JSON schema, its nested models moved to ``components/schemas``."""
    schema = model.model_json_schema(ref_template=_SCHEMAS)
    schemas.update(schema.pop("$defs", {}))
    return schema


def _deployment_paths(schemas: dict[str, Any]) -> dict[str, Any]:
    model = ("model",)
    status = {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "policy": {"type": ["object", "null"]},
            "stable": {"type": "string"},
            "arms": {"type": "array", "items": _ANY_OBJECT},
            "live_versions": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["model", "stable", "arms"],
    }

    def body(kind: type[BaseModel]) -> dict[str, Any]:
        return {JSON: {"schema": _body_schema(kind, schemas)}}

    return {
        "/v1/models/{model}/feedback": {
            "post": _op(
                "A reward in [0, 1] for a routed request, by its X-Request-Id (counted once)",
                _responses(_ANY_OBJECT, 400, 404, 409, 413, 503),
                params=model,
                body=body(admin_deployments.Feedback),
            )
        },
        "/v1/admin/deployments/{model}": {
            "get": _op(
                "Deployment status: arms, traffic, rewards, errors, latency, guard",
                _responses(status, 404, 503),
                params=model,
            ),
            "put": _op(
                "Start a rollout (pinned, canary, shadow, epsilon-greedy, ucb1, thompson) with its guard",
                _responses(status, 400, 404, 409, 413, 503),
                params=model,
                body=body(admin_deployments.Rollout),
            ),
        },
        "/v1/admin/deployments/{model}/rollback": {
            "post": _op(
                "Send all traffic to the stable version (or the one named), atomically",
                _responses(status, 400, 404, 409, 413, 503),
                params=model,
                body=body(admin_deployments.Rollback),
            )
        },
        "/v1/admin/deployments/{model}/promote": {
            "post": _op(
                "Make a version stable and route all traffic to it",
                _responses(status, 400, 404, 409, 413, 503),
                params=model,
                body=body(admin_deployments.Promote),
            )
        },
        "/v1/admin/deployments/{model}/history": {
            "get": _op(
                "Every deployment and registry change of a model", _responses(_ANY_OBJECT, 404), params=model
            )
        },
    }


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths = {**_metadata_paths(), **_infer_paths(), **_admin_paths(), **_deployment_paths(schemas)}
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
            "schemas": schemas,
        },
        "paths": paths,
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())


def routes() -> list[Route]:
    return [Route("/openapi.json", openapi_json, methods=["GET"])]
