"""The server process: gRPC server, health service, model repository, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from core.server_process import ANNOUNCE
from protos.generated import inference_pb2_grpc as pb_grpc
from servers import runtime, wire
from servers.repository import ModelRepository
from servers.service import InferenceService
from servers.settings import ServerSettings

log = logging.getLogger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"


def channel_options(settings: ServerSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        # Two servers must not silently share a port.
        ("grpc.so_reuseport", 0),
    ]


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
    """``handler`` with a deserializer that hands bytes that are not a valid message to the
    servicer as ``wire.Malformed`` (answered INVALID_ARGUMENT) instead of raising: gRPC would
    answer UNKNOWN, log a traceback and, inside a stream, leave the stream hanging."""
    parse = handler.request_deserializer
    assert parse is not None

    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except DecodeError as error:
            return wire.Malformed(str(error))

    serialize = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(handler.stream_stream, deserialize, serialize)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(handler.stream_unary, deserialize, serialize)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(handler.unary_stream, deserialize, serialize)
    return grpc.unary_unary_rpc_method_handler(handler.unary_unary, deserialize, serialize)


def add_inference_service(service: InferenceService, server: grpc.aio.Server) -> None:
    """Register ``service`` as the generated code would, with malformed messages tolerated."""
    collected = _Handlers()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, collected)  # type: ignore[arg-type]
    if not collected.handlers:
        raise RuntimeError("the generated stubs registered no method handlers")
    handlers = {method: _tolerant(handler) for method, handler in collected.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(collected.service, handlers),))
    server.add_registered_method_handlers(collected.service, handlers)  # type: ignore[attr-defined]


@dataclass
class InferenceServer:
    """A started server; ``port`` is the one actually bound."""

    settings: ServerSettings
    server: grpc.aio.Server
    service: InferenceService
    health: health_aio.HealthServicer
    repository: ModelRepository
    port: int

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish within the grace period, free models."""
        grace = self.settings.exit_timeout_secs if grace_s is None else grace_s
        self.service.ready = False
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.repository.close()


async def start_server(settings: ServerSettings) -> InferenceServer:
    """Bind, start serving health at once, load the models, then report ready."""
    runtime.check_device(settings.device, settings.execution_provider)
    repository = ModelRepository(settings)
    service = InferenceService(repository, settings)
    health_servicer = health_aio.HealthServicer()
    server = grpc.aio.server(options=channel_options(settings))
    add_inference_service(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{settings.grpc_address}:{settings.grpc_port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.grpc_address}:{settings.grpc_port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    log.info(ANNOUNCE, settings.grpc_address, port)
    await repository.start()
    service.ready = True
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("mdeploy-server ready on %s:%d", settings.grpc_address, port)
    return InferenceServer(settings, server, service, health_servicer, repository, port)


async def serve(settings: ServerSettings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining in-flight requests for up to %.0fs", settings.exit_timeout_secs)
    await running.stop()
    log.info("mdeploy-server stopped")
