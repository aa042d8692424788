"""The web console: static files at ``/console/``, a client of the same JSON API as everyone.

The pages hold no data, so they load without a key; every data call is the browser's own
``fetch`` to the API with ``Authorization: Bearer`` (the key lives in ``sessionStorage``). The
routes stay out of ``gateway.app.all_routes``: that table is the API (OpenAPI, auth surface).
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
        "require-trusted-types-for 'script'",
    ]
)

HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    # Revalidated on each load (StaticFiles answers 304 on a matching ETag): an upgraded gateway
    # never runs a stale script against its new API.
    "cache-control": "no-cache",
}


class SecurityHeaders:
    """Puts ``HEADERS`` on every answer of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = [(k, v) for k, v in message.get("headers", []) if k.decode().lower() not in HEADERS]
                raw += [(k.encode(), v.encode()) for k, v in HEADERS.items()]
                message = {**message, "headers": raw}
            await send(message)

        await self._app(scope, receive, send_with_headers)


def routes() -> list[BaseRoute]:
    # One Mount and no Route: the OpenAPI document walks Routes (every one must be an API
    # operation) and sees nothing inside an app Mount. ``/console`` itself gets the router's
    # redirect to ``/console/``, where the page's relative asset URLs resolve.
    return [Mount("/console", app=SecurityHeaders(StaticFiles(directory=STATIC, html=True)), name="console")]
