"""The gateway's gRPC listener: the inference service, grpc.health.v1 and server reflection.

It runs on the gateway's event loop, started and stopped by the app's lifespan, so that its
calls reach the same auth, batchers and registry as the HTTP API's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from core.tasks import cancelled
from gateway.auth.authorization import Auth
from gateway.backends import BackendPool
from gateway.grpc_api.servicer import GatewayInferenceService
from gateway.settings import GatewaySettings
from gateway.state import GatewayState
from protos.servicing import SERVICE_NAME, add_inference_service

log = logging.getLogger(__name__)

ANNOUNCE = "gateway gRPC API listening on %s:%d"
"""Logged once the listener is bound (``gateway.process`` reads the port from it)."""
_HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


READINESS_POLL_S = 0.5


@dataclass
class GrpcListener:
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    address: str
    readiness: asyncio.Task[None] | None = None

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls; calls in flight get ``grace_s`` to finish."""
        await cancelled(self.readiness)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def _follow_readiness(health: health_aio.HealthServicer, pool: BackendPool) -> None:
    """grpc.health.v1 says what ``/v2/health/ready`` says: SERVING while an inference server is
    healthy, NOT_SERVING otherwise, so a gRPC load balancer (Envoy) skips a gateway that could
    only answer UNAVAILABLE."""
    serving: bool | None = None
    while True:
        now = bool(pool.healthy())
        if now != serving:
            status = (
                health_pb2.HealthCheckResponse.SERVING if now else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", SERVICE_NAME):
                await health.set(name, status)
            serving = now
        await asyncio.sleep(READINESS_POLL_S)


def server_options(settings: GatewaySettings, *, reuse_port: bool = False) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_metadata_size", settings.grpc_max_metadata_bytes),
        # Two gateways must not silently share a port; the workers of one ``mdeploy serve
        # --workers N`` do (its supervisor checked that the port was free, and holds it).
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


async def start_grpc_listener(
    settings: GatewaySettings, auth: Auth, state: GatewayState, *, reuse_port: bool = False
) -> GrpcListener:
    server = grpc.aio.server(options=server_options(settings, reuse_port=reuse_port))
    add_inference_service(GatewayInferenceService(auth, state), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection((SERVICE_NAME, _HEALTH_SERVICE, reflection.SERVICE_NAME), server)
    address = f"{settings.host}:{settings.grpc_port}"
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
        port = server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"the gateway cannot listen for gRPC on {settings.host}:{settings.grpc_port}")
    await server.start()
    readiness = asyncio.create_task(_follow_readiness(health, state.pool), name="grpc-health")
    log.info(ANNOUNCE, settings.host, port)
    return GrpcListener(server, health, f"{settings.host}:{port}", readiness)
