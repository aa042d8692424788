"""JSON responses and the one mapping of errors to HTTP.

Errors leave as ``{"error": "<message>"}`` (the KServe v2 REST error form) with the status
the error carries; an unexpected exception is logged and answered 500 without a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
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


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def mdeploy_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, MdeployError)
    return error_response(error.http_status, error.message, error.headers)


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, str(error.detail), dict(error.headers or {}))


async def unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal error; see the gateway log")


EXCEPTION_HANDLERS = {
    MdeployError: mdeploy_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
