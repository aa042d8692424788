"""Registering a GRPCInferenceService servicer: the mdeploy-server's and the gateway's.

The generated registration hands undecodable request bytes to gRPC, which then answers
UNKNOWN, logs a traceback and, inside a stream, leaves the stream hanging. Registered through
``add_inference_service`` the servicer receives a ``Malformed`` instead, and answers
INVALID_ARGUMENT itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from core.errors import InvalidInput
from protos.generated import inference_pb2_grpc as pb_grpc

SERVICE_NAME = "inference.GRPCInferenceService"


@dataclass(frozen=True)
class Malformed:
    """What the servicer gets instead of a request whose bytes are not a valid protobuf message."""

    reason: str

    def error(self) -> InvalidInput:
        return InvalidInput(f"malformed request: {self.reason}")


class _Handlers:
    """Stands in for the server to collect the method handlers the generated code registers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # built again below from the same method handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service = service
        self.handlers = dict(handlers)


def _tolerant(handler: Any) -> Any:
    """``handler`` with a deserializer that returns ``Malformed`` for bytes it cannot parse."""
    parse = handler.request_deserializer
    assert parse is not None

    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except DecodeError as error:
            return Malformed(str(error))

    serialize = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(handler.stream_stream, deserialize, serialize)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(handler.stream_unary, deserialize, serialize)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(handler.unary_stream, deserialize, serialize)
    return grpc.unary_unary_rpc_method_handler(handler.unary_unary, deserialize, serialize)


def add_inference_service(servicer: pb_grpc.GRPCInferenceServiceServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as the generated code would, with malformed messages tolerated."""
    collected = _Handlers()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, collected)  # type: ignore[arg-type]
    if not collected.handlers:
        raise RuntimeError("the generated stubs registered no method handlers")
    handlers = {method: _tolerant(handler) for method, handler in collected.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(collected.service, handlers),))
    server.add_registered_method_handlers(collected.service, handlers)  # type: ignore[attr-defined]
