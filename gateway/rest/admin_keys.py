"""Admin API for API keys: create (the key is shown once), list, get, revoke. KeyScope ``admin``."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import InvalidInput, PayloadTooLarge
from gateway.auth import Auth, KeyScope, KeyStore, parse_expiry, requires
from gateway.auth.keys import CreatedKeyInfo, KeyInfo
from gateway.rest.api_doc import Operation, documented
from gateway.rest.responses import ModelResponse

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


class CreateKeyBody(BaseModel):
    """``POST /v1/admin/keys``: what the new key may do."""

    model_config = ConfigDict(extra="forbid")

    scopes: list[str]
    models: list[str] | None = None
    rate_limit: str | None = None
    expires_at: str | None = None
    """A date (2027-01-01), an ISO 8601 date-time, or a duration from now (12h, 30d, 2w)."""
    name: str = ""


class KeyList(BaseModel):
    """``GET /v1/admin/keys``: every key, revoked and expired ones too."""

    keys: list[KeyInfo]


def routes() -> list[Route]:
    return [
        Route("/v1/admin/keys", create_key, methods=["POST"]),
        Route("/v1/admin/keys", list_keys, methods=["GET"]),
        Route("/v1/admin/keys/{key_id}", get_key, methods=["GET"]),
        Route("/v1/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    ]


@documented(
    Operation(
        "Create an API key (shown once)",
        answer=CreatedKeyInfo,
        status=201,
        errors=(400, 413),
        body=CreateKeyBody,
    )
)
@requires(KeyScope.ADMIN)
async def create_key(request: Request) -> Response:
    body = _parse(await _read_body(request))
    keys = _keys(request)
    created = await keys.create(
        body.scopes,
        models=body.models,
        rate_limit=body.rate_limit,
        expires_at=parse_expiry(body.expires_at, keys.now()) if body.expires_at else None,
        name=body.name,
        actor=f"key:{_caller(request)}",
    )
    log.info("API key %s created by key %s", created.record.id, _caller(request))
    info = created.record.info(keys.now())
    return ModelResponse(CreatedKeyInfo(**dict(info), key=created.key), status_code=201)


@documented(Operation("List API keys", answer=KeyList))
@requires(KeyScope.ADMIN)
async def list_keys(request: Request) -> Response:
    keys = _keys(request)
    now = keys.now()
    return ModelResponse(KeyList(keys=[record.info(now) for record in await keys.list()]))


@documented(Operation("One API key", answer=KeyInfo, errors=(404,)))
@requires(KeyScope.ADMIN)
async def get_key(request: Request) -> Response:
    keys = _keys(request)
    return ModelResponse((await keys.get(request.path_params["key_id"])).info(keys.now()))


@documented(Operation("Revoke an API key", answer=KeyInfo, errors=(404,)))
@requires(KeyScope.ADMIN)
async def revoke_key(request: Request) -> Response:
    keys = _keys(request)
    record = await keys.revoke(request.path_params["key_id"], actor=f"key:{_caller(request)}")
    log.info("API key %s revoked by key %s", record.id, _caller(request))
    return ModelResponse(record.info(keys.now()))


def _keys(request: Request) -> KeyStore:
    auth: Auth = request.app.state.auth
    return auth.keys


def _caller(request: Request) -> str:
    return str(request.state.api_key.id)


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body is over {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _parse(raw: bytes) -> CreateKeyBody:
    try:
        document: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"request body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInput('request body must be a JSON object such as {"scopes": ["predict"]}')
    try:
        return CreateKeyBody.model_validate(document)
    except ValidationError as error:
        raise InvalidInput("; ".join(_describe(detail) for detail in error.errors())) from None


def _describe(detail: ErrorDetails) -> str:
    field = ".".join(str(part) for part in detail["loc"])
    if detail["type"] == "extra_forbidden":
        allowed = ", ".join(CreateKeyBody.model_fields)
        return f"unknown field {field!r}; the fields are {allowed}"
    if detail["type"] == "missing":
        return f"field {field!r} is required"
    return f"field {field!r}: {detail['msg']}"
