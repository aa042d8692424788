"""The inference servers behind the gateway, reached over the v2 gRPC protocol.

One persistent grpc.aio channel per replica. Each replica is health-checked with
grpc.health.v1; a request goes to the healthy replica with the fewest requests in flight. A
replica that answers UNAVAILABLE (or does not answer) is marked down at once and the request
is retried once on another; it comes back when its health check passes again, and listeners
(the reconcile loop) hear of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.errors import (
    DeadlineExceeded,
    Internal,
    InvalidInput,
    MdeployError,
    NotFound,
    Unavailable,
    Unsupported,
)
from core.tasks import cancelled
from gateway.backend_address import BackendTls, parse_backend
from gateway.backend_statistics import merge_statistics
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 1024 * MiB),
    ("grpc.max_send_message_length", 1024 * MiB),
    ("grpc.keepalive_time_ms", 30_000),
]

UpListener = Callable[["Backend"], Awaitable[None]]


@dataclass(eq=False)
class Backend:
    address: str
    channel: grpc.aio.Channel
    stub: pb_grpc.GRPCInferenceServiceAsyncStub
    health: health_pb2_grpc.HealthStub
    metadata: tuple[tuple[str, str], ...] = ()
    """Sent with every call: the server token, when the server checks one."""
    healthy: bool = False
    in_flight: int = 0
    last_error: str = ""


def map_rpc_error(error: grpc.aio.AioRpcError, address: str) -> MdeployError:
    """A backend's status as the most specific mdeploy error (its message kept)."""
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"inference server {address} did not answer in time")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Unavailable(f"inference server {address} is overloaded ({details}); retry later")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return Unsupported(details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"inference server {address} is unavailable")
    return Internal(f"inference server {address} failed: {details}")


@dataclass(eq=False)
class BackendPool:
    addresses: list[str]
    timeout_s: float = 30.0
    health_interval_s: float = 2.0
    tls: BackendTls | None = None
    """TLS files for ``grpcs://`` backends that name none of their own."""
    backends: list[Backend] = field(default_factory=list)
    _listeners: list[UpListener] = field(default_factory=list)
    _health_task: asyncio.Task[None] | None = None
    _notifications: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        for named in self.addresses:
            target = parse_backend(named, self.tls)
            channel = target.channel(_CHANNEL_OPTIONS)
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            self.backends.append(Backend(target.address, channel, stub, health, target.metadata()))
        await self.check_health()
        self._health_task = asyncio.create_task(self._health_loop(), name="backend-health")

    async def close(self) -> None:
        await cancelled(self._health_task)
        for task in list(self._notifications):
            task.cancel()
        await asyncio.gather(*(b.channel.close(grace=None) for b in self.backends))

    def on_backend_up(self, listener: UpListener) -> None:
        """Call ``listener`` whenever a replica becomes healthy (at start too)."""
        self._listeners.append(listener)

    def healthy(self) -> list[Backend]:
        return [b for b in self.backends if b.healthy]

    def pick(self, exclude: set[Backend] | None = None) -> Backend:
        candidates = [b for b in self.healthy() if not exclude or b not in exclude]
        if not candidates:
            raise Unavailable("no inference server is available; retry shortly")
        return min(candidates, key=lambda b: b.in_flight)

    def mark_down(self, backend: Backend, reason: str) -> None:
        if backend.healthy:
            log.warning("inference server %s marked down: %s", backend.address, reason)
        backend.healthy = False
        backend.last_error = reason

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """ModelInfer on the least busy healthy replica; once more elsewhere if it is unavailable."""
        tried: set[Backend] = set()
        while True:
            backend = self.pick(tried)
            tried.add(backend)
            backend.in_flight += 1
            try:
                return await backend.stub.ModelInfer(
                    request, timeout=self.timeout_s, metadata=backend.metadata
                )
            except grpc.aio.AioRpcError as error:
                mapped = map_rpc_error(error, backend.address)
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.mark_down(backend, mapped.message)
                retry = error.code() == grpc.StatusCode.UNAVAILABLE and len(tried) < 2
                if not retry or not any(b not in tried for b in self.healthy()):
                    raise mapped from None
            finally:
                backend.in_flight -= 1

    async def statistics(self, request: pb.ModelStatisticsRequest) -> pb.ModelStatisticsResponse:
        """ModelStatistics of every healthy replica, added up per version."""
        backends = self.healthy()
        if not backends:
            raise Unavailable("no inference server is available; retry shortly")
        calls = [
            b.stub.ModelStatistics(request, timeout=self.timeout_s, metadata=b.metadata) for b in backends
        ]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        for backend, answer in zip(backends, answers, strict=True):
            if isinstance(answer, grpc.aio.AioRpcError):
                raise map_rpc_error(answer, backend.address)
            if isinstance(answer, BaseException):
                raise answer
        return merge_statistics(a for a in answers if isinstance(a, pb.ModelStatisticsResponse))

    async def check_health(self) -> None:
        await asyncio.gather(*(self._check(b) for b in self.backends))

    async def _check(self, backend: Backend) -> None:
        try:
            check = health_pb2.HealthCheckRequest(service="")
            reply = await backend.health.Check(check, timeout=1.0, metadata=backend.metadata)
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError as error:
            serving, backend.last_error = False, error.details() or str(error.code())
        was_healthy, backend.healthy = backend.healthy, serving
        if serving and not was_healthy:
            log.info("inference server %s is up", backend.address)
            for listener in self._listeners:
                # Listeners (a reconcile) may take long; the health loop must not wait for them.
                task = asyncio.create_task(self._notify(listener, backend))
                self._notifications.add(task)
                task.add_done_callback(self._notifications.discard)
        elif was_healthy and not serving:
            log.warning("inference server %s failed its health check", backend.address)

    @staticmethod
    async def _notify(listener: UpListener, backend: Backend) -> None:
        try:
            await listener(backend)
        except Exception:
            log.exception("listener failed for inference server %s", backend.address)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self.check_health()
