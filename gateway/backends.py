"""The inference servers behind the gateway, reached over the v2 gRPC protocol.

One persistent grpc.aio channel per replica. Each replica is health-checked with
grpc.health.v1; a request goes to the healthy replica with the fewest requests in flight among
those that serve the version it names. A replica that answers UNAVAILABLE (or does not answer)
is marked down at once and the request is retried once on another; it comes back when its
health check passes again, and listeners (the reconcile loop) hear of it.

**Inventories.** Each replica's inventory is the set of versions it serves READY, by model:
read with RepositoryIndex when it comes back (before it is offered: a restarted server has lost
its models until the leading gateway's reconcile loads them again, and other gateway processes
must not send it predictions meanwhile), kept up to date with the loads and unloads of this
process, and read again at the next health check once a request found it lacking a version it
wanted (the leader may have loaded it since). Whatever the inventories say, a replica that
answers NOT_FOUND for a version (the data plane asks only for live ones) no longer has it: the
request is retried once on another. While no healthy replica is known to serve a version,
requests for it go to the least busy healthy one, and its answer says what is wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
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

INVENTORY_TIMEOUT_S = 2.0
"""RepositoryIndex from the health loop: one slow server must not hold the others' checks long."""
_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)

UpListener = Callable[["Backend"], Awaitable[None]]
Inventory = dict[str, frozenset[str]]
"""The versions a server serves READY, by model; versions as the protocol writes them ("1")."""


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
    inventory: Inventory | None = None
    """What it serves (see the module docstring); None while not known, when it is offered only
    for versions that no healthy backend is known to serve."""
    inventory_stale: bool = False
    """It may serve more than ``inventory`` says: read it again at the next health check."""
    _changes: int = field(default=0, init=False, repr=False)
    """Counts what this process learnt of the inventory, so an index read before is not taken."""

    def serves(self, model: str, version: str) -> bool:
        """Whether the inventory lists ``version`` of ``model`` (any version, when empty)."""
        inventory = self.inventory
        if inventory is None:
            return False
        versions = inventory.get(model)
        return versions is not None and (not version or version in versions)

    async def read_inventory(self, timeout_s: float) -> Inventory:
        """RepositoryIndex: what it serves READY now, which becomes its inventory."""
        changes, self.inventory_stale = self._changes, False
        try:
            reply = await self.stub.RepositoryIndex(
                pb.RepositoryIndexRequest(ready=True), timeout=timeout_s, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as error:
            self.inventory_stale = True
            raise map_rpc_error(error, self.address) from None
        served: dict[str, set[str]] = {}
        for entry in reply.models:
            if entry.state == "READY" and entry.version:
                served.setdefault(entry.name, set()).add(entry.version)
        inventory = {model: frozenset(versions) for model, versions in served.items()}
        if changes == self._changes:
            self.inventory = inventory
        else:  # a load, unload or NOT_FOUND while the index was read: it may predate them
            self.inventory_stale = True
        return dict(inventory)

    def note_loaded(self, model: str, versions: Iterable[str]) -> None:
        """This process loaded ``model`` on it with exactly ``versions`` (a load replaces the set)."""
        self._changes += 1
        if self.inventory is None:  # the rest is still unknown: read it at the next check
            self.inventory, self.inventory_stale = {}, True
        self.inventory[model] = frozenset(versions)

    def note_unloaded(self, model: str) -> None:
        self._changes += 1
        if self.inventory is not None:
            self.inventory.pop(model, None)

    def note_missing(self, model: str, version: str) -> None:
        """It answered NOT_FOUND for ``version`` of ``model`` (every version, when empty)."""
        self._changes += 1
        inventory = self.inventory
        if inventory is None or model not in inventory:
            return
        if version:
            inventory[model] = inventory[model] - {version}
        else:
            del inventory[model]


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

    def pick(self, model: str, version: str, exclude: set[Backend] | None = None) -> Backend:
        """The least busy healthy backend that serves ``version`` of ``model``; while none is
        known to, the least busy healthy one. Per batch: one pass, no call."""
        chosen: Backend | None = None
        fallback: Backend | None = None
        for backend in self.backends:
            if not backend.healthy or (exclude and backend in exclude):
                continue
            if backend.serves(model, version):
                if chosen is None or backend.in_flight < chosen.in_flight:
                    chosen = backend
            else:
                backend.inventory_stale = True  # it may have loaded it since we last looked
                if fallback is None or backend.in_flight < fallback.in_flight:
                    fallback = backend
        if chosen is not None:
            return chosen
        if fallback is not None:
            return fallback
        raise Unavailable("no inference server is available; retry shortly")

    def mark_down(self, backend: Backend, reason: str) -> None:
        if backend.healthy:
            log.warning("inference server %s marked down: %s", backend.address, reason)
        backend.healthy = False
        backend.last_error = reason

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """ModelInfer on the least busy healthy replica that serves the version; once more
        elsewhere if it is unavailable or turns out not to serve it."""
        model, version = request.model_name, request.model_version
        tried: set[Backend] = set()
        while True:
            backend = self.pick(model, version, tried)
            tried.add(backend)
            backend.in_flight += 1
            try:
                return await backend.stub.ModelInfer(
                    request, timeout=self.timeout_s, metadata=backend.metadata
                )
            except grpc.aio.AioRpcError as error:
                code = error.code()
                mapped = map_rpc_error(error, backend.address)
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.mark_down(backend, mapped.message)
                elif code == grpc.StatusCode.NOT_FOUND:
                    # The data plane asks for live versions only: this server lost or never got it.
                    backend.note_missing(model, version)
                retry = code in _RETRIED and len(tried) < 2
                if not retry or not any(b.healthy and b not in tried for b in self.backends):
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
        if not serving:
            if backend.healthy:
                log.warning("inference server %s failed its health check", backend.address)
            backend.healthy = False
        elif not backend.healthy:
            await self._come_up(backend)
        elif backend.inventory is None or backend.inventory_stale:
            try:
                await backend.read_inventory(INVENTORY_TIMEOUT_S)
            except MdeployError as error:
                log.debug("inventory of inference server %s not read: %s", backend.address, error.message)

    async def _come_up(self, backend: Backend) -> None:
        # It may have restarted and lost its models: offered only for what it lists from now on.
        backend.inventory = None
        try:
            await backend.read_inventory(INVENTORY_TIMEOUT_S)
        except MdeployError as error:
            log.warning(
                "inference server %s is up but did not list its models (%s): it gets requests only "
                "for models no other server is known to serve",
                backend.address,
                error.message,
            )
        backend.healthy = True
        log.info("inference server %s is up", backend.address)
        for listener in self._listeners:
            # Listeners (a reconcile) may take long; the health loop must not wait for them.
            task = asyncio.create_task(self._notify(listener, backend))
            self._notifications.add(task)
            task.add_done_callback(self._notifications.discard)

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
