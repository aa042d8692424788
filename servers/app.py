"""The server process: gRPC server, health service, model repository, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from core.errors import InvalidInput
from core.server_process import ANNOUNCE
from core.server_token import read_token
from protos.servicing import SERVICE_NAME, add_inference_service
from servers import runtime
from servers.caller_token import CallerTokenInterceptor
from servers.repository import ModelRepository
from servers.service import InferenceService
from servers.settings import ServerSettings

log = logging.getLogger(__name__)


def channel_options(settings: ServerSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        # Two servers must not silently share a port.
        ("grpc.so_reuseport", 0),
    ]


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


def _interceptors(settings: ServerSettings) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """The token check, or a warning that the server answers anyone who reaches its address."""
    if settings.auth_token_file is None:
        log.warning(
            "mdeploy-server is unauthenticated (no --auth-token-file): anyone who reaches %s may "
            "load, unload and run models; it listens on a loopback address only",
            settings.grpc_address,
        )
        return []
    try:
        token = read_token(settings.auth_token_file)
    except ValueError as error:
        raise InvalidInput(str(error)) from None
    return [CallerTokenInterceptor(token, allow_unauthenticated_health=settings.allow_unauthenticated_health)]


def _server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files; None for plaintext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    try:
        pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
        client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    except OSError as error:
        raise InvalidInput(f"cannot read a TLS file: {error}") from None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def start_server(settings: ServerSettings) -> InferenceServer:
    """Bind, start serving health at once, load the models, then report ready."""
    runtime.check_device(settings.device, settings.execution_provider)
    repository = ModelRepository(settings)
    service = InferenceService(repository, settings)
    health_servicer = health_aio.HealthServicer()
    server = grpc.aio.server(options=channel_options(settings), interceptors=_interceptors(settings))
    add_inference_service(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{settings.grpc_address}:{settings.grpc_port}"
    credentials = _server_credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
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
