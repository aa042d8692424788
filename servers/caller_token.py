"""Closing the server to everyone but the gateway (``core.server_token``).

With ``--auth-token-file`` a server refuses every RPC whose metadata lacks
``authorization: Bearer <token>`` with UNAUTHENTICATED, compared in constant time. Health checks
(``grpc.health.v1``) may pass without it (``allow_unauthenticated_health``), so that
orchestrators can probe the server. Without a token file the server listens on loopback only.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from core.server_token import METADATA_KEY

log = logging.getLogger(__name__)

_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_REFUSAL = "this inference server answers only to its gateway: the call carries no valid server token"


class CallerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses calls without the server token (see the module docstring)."""

    def __init__(self, token: str, *, allow_unauthenticated_health: bool) -> None:
        self._expected = f"Bearer {token}".encode()
        self._allow_health = allow_unauthenticated_health

    def _presented(self, details: grpc.HandlerCallDetails) -> bytes:
        for key, value in details.invocation_metadata or ():
            if key == METADATA_KEY:
                return value.encode() if isinstance(value, str) else bytes(value)
        return b""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method: str = handler_call_details.method
        if self._allow_health and method.startswith(_HEALTH_PREFIX):
            return await continuation(handler_call_details)
        if hmac.compare_digest(self._presented(handler_call_details), self._expected):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        log.warning("refused %s from a caller without the server token", method)
        return _refusing(handler)


def _refusing(handler: grpc.RpcMethodHandler[Any, Any] | None) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)
        yield  # an async generator, as a streaming handler must be

    if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED after this anyway
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    return grpc.unary_unary_rpc_method_handler(refuse)
