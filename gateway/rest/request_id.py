"""Every response carries ``X-Request-Id``: the client's own when it is a sane token, else a new one.

A pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware): it runs on the hot path.
"""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_VALID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    """The id assigned to this request (set by the middleware)."""
    return str(scope["state"]["request_id"])


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = next((v for k, v in scope["headers"] if k == HEADER), None)
        # 128 random bits as 32 hex digits, like uuid4().hex at a fifth of its cost.
        request_id = supplied.decode() if supplied and _VALID.match(supplied) else os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != HEADER]
                headers.append((HEADER, encoded))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
