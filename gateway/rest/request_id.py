"""Every response carries ``X-Request-Id``: the client's own when it is a sane token, else a new one.

A pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware): it runs on the hot path.
The prediction fast path (``gateway.app.GatewayApp``) uses the same two functions.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.request_ids import request_id_from

HEADER = b"x-request-id"


def request_id_of(scope: Scope) -> str:
    """The id assigned to this request (set by the middleware)."""
    return str(scope["state"]["request_id"])


def assign_request_id(scope: Scope, supplied: bytes | None = None) -> bytes:
    """Give the request its id (in ``scope["state"]``); the id as a header value. ``supplied``:
    the request's X-Request-Id when the caller has already looked it up."""
    if supplied is None:
        supplied = next((v for k, v in scope["headers"] if k == HEADER), None)
    request_id = request_id_from(supplied)
    scope.setdefault("state", {})["request_id"] = request_id
    return request_id.encode()


def sending_request_id(send: Send, encoded: bytes) -> Send:
    """``send`` that puts ``X-Request-Id: encoded`` on the response (replacing any other)."""

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k != HEADER]
            headers.append((HEADER, encoded))
            message["headers"] = headers
        await send(message)

    return send_with_id


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, sending_request_id(send, assign_request_id(scope)))
