"""JSON responses and the one mapping of errors to HTTP.

Errors leave as ``{"error": "<message>"}`` (the KServe v2 REST error form) with the status
the error carries; an unexpected exception is logged and answered 500 without a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import BaseModel
from slowapi import _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from core.errors import MdeployError

log = logging.getLogger(__name__)

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class JSONResponse(Response):
    """orjson-encoded JSON (numpy arrays serialised natively)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


class ModelResponse(Response):
    """A pydantic model's JSON (field aliases as names): every admin and status answer."""

    media_type = "application/json"

    def __init__(
        self, answer: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(answer.model_dump_json(by_alias=True), status_code, headers)


class ErrorAnswer(BaseModel):
    """Every error's body (the KServe v2 REST error form)."""

    error: str
    """What went wrong and what to change."""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def mdeploy_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, MdeployError)
    return error_response(error.http_status, error.message, error.headers)


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, str(error.detail), dict(error.headers or {}))


async def rate_limit_exceeded(request: Request, error: Exception) -> Response:
    """slowapi's handler (``{"error": "Rate limit exceeded: ..."}`` and its Limiter's headers);
    called here, not in a thread: GatewayLimiter's headers need no storage call."""
    assert isinstance(error, RateLimitExceeded)
    return _rate_limit_exceeded_handler(request, error)


async def unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal error; see the gateway log")


EXCEPTION_HANDLERS = {
    # slowapi's 429 on the Starlette routes: {"error": "Rate limit exceeded: ..."} with the headers
    # of the app's Limiter (``app.state.limiter``).
    RateLimitExceeded: rate_limit_exceeded,
    MdeployError: mdeploy_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
