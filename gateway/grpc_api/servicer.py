"""The gateway's GRPCInferenceService: the HTTP API's keys, limits, routing and batching over gRPC.

Every RPC reads the caller's metadata (``authorization: Bearer <key>`` or ``x-api-key``,
``x-request-id``, ``x-routing-key``), passes ``Auth.authorize`` exactly as an HTTP request does
(one key store, one rate-limit budget per key across both protocols), then works through the
same parts: ``DataPlane.infer`` for predictions (the same batchers, so gRPC and HTTP requests
share backend calls), the catalog and registry for metadata. Errors leave as the status code
each ``MdeployError`` carries, with the HTTP answer's message; a refusal's ``Retry-After`` and
``X-RateLimit-*`` go in trailing metadata, lower-cased.

``ServerLive`` and ``ServerReady`` need no key, as ``/v2/health/*`` does not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from core import __version__
from core.errors import InvalidInput, MdeployError, NotFound, PayloadTooLarge, Unsupported
from gateway import model_repository
from gateway.auth.authorization import Auth, Grant, granted
from gateway.auth.scopes import KeyScope
from gateway.catalog import ServedVersion
from gateway.dataplane import InferenceRequest
from gateway.request_ids import request_id_from
from gateway.state import GatewayState
from protos import codecs
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc
from protos.servicing import Malformed, StreamRequest, answer_stream, answering_errors

log = logging.getLogger(__name__)

EXTENSIONS = ["model_repository", "model_configuration", "statistics"]
REQUEST_ID = "x-request-id"
ROUTING_KEY = "x-routing-key"
MAX_ROUTING_KEY = 256
PROTOCOL = "grpc"
"""The ``route`` label of this front end's requests in the gateway's metrics."""

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True)
class Caller:
    """What a call's metadata says about who calls and how."""

    authorization: str | None
    api_key: str | None
    request_id: str | None
    routing_key: str | None
    address: str | None
    """The client's address (its failed authentications are counted)."""

    @classmethod
    def of(cls, context: Context) -> Caller:
        found: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):
                found.setdefault(key, value)  # the first of repeated keys, as HTTP's get()
        routing_key = found.get(ROUTING_KEY)
        if routing_key is not None and len(routing_key) > MAX_ROUTING_KEY:
            raise InvalidInput(
                f"the x-routing-key metadata is {len(routing_key)} characters long; at most {MAX_ROUTING_KEY}"
            )
        return cls(
            found.get("authorization"),
            found.get("x-api-key"),
            found.get(REQUEST_ID),
            routing_key,
            peer_address(context.peer()),
        )


def peer_address(peer: str | None) -> str | None:
    """The host of a gRPC peer such as ``ipv4:127.0.0.1:5000`` or ``ipv6:[::1]:5000``."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer  # unix sockets and the like: the whole name is the address
    host = rest.rpartition(":")[0]
    return host.strip("[]") or None


def _metadata(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name.lower(), value) for name, value in headers.items())


def _status(error: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The error's code and the HTTP answer's message; its headers (Retry-After...) as metadata."""
    if isinstance(error, MdeployError):
        return error.grpc_code, error.message, _metadata(error.headers)
    log.exception("unexpected error in a gRPC call", exc_info=error)
    return grpc.StatusCode.INTERNAL, "internal error; see the gateway log", ()


async def _abort(context: Context, error: Exception) -> None:
    code, message, trailing = _status(error)
    await context.abort(code, message, trailing)


answered = answering_errors(_status)
"""Every failure leaves as a gRPC status with the HTTP answer's message, never a traceback."""


class GatewayInferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, auth: Auth, state: GatewayState) -> None:
        self.auth = auth
        self.state = state

    async def _authorize(self, caller: Caller, scope: KeyScope, model: str | None = None) -> Grant:
        authorize = self.auth.authorize
        return await granted(authorize(caller.authorization, caller.api_key, scope, model, caller.address))

    # ---- health and metadata ----

    @answered
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @answered
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=bool(self.state.pool.healthy()))

    @answered
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        await self._authorize(Caller.of(context), KeyScope.PREDICT)
        return pb.ServerMetadataResponse(name="mdeploy", version=__version__, extensions=EXTENSIONS)

    @answered
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        await self._authorize(Caller.of(context), KeyScope.PREDICT, request.name)
        try:
            self.state.catalog.resolve(request.name, request.version or None)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)  # as Triton answers for a model it lacks
        return pb.ModelReadyResponse(ready=bool(self.state.pool.healthy()))

    @answered
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        await self._authorize(Caller.of(context), KeyScope.PREDICT, request.name)
        catalog = self.state.catalog
        version = request.version or await self.state.router.live_version(request.name)
        served = catalog.resolve(request.name, version)
        return model_metadata(served, [v.version for v in catalog.served_versions(request.name)])

    @answered
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        await self._authorize(Caller.of(context), KeyScope.PREDICT, request.name)
        self.state.catalog.resolve(request.name, request.version or None)  # NotFound for what is not served
        return pb.ModelConfigResponse(config=await self.state.registry.model_config(request.name))

    @answered
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        grant = await self._authorize(Caller.of(context), KeyScope.PREDICT, request.name or None)
        return await model_repository.statistics(self.state, grant.key, request.name, request.version)

    # ---- inference ----

    async def _infer(
        self, request: pb.ModelInferRequest | Malformed, caller: Caller, remaining_s: float | None
    ) -> tuple[pb.ModelInferResponse, Grant, str]:
        if isinstance(request, Malformed):
            raise request.error()
        grant = await self._authorize(caller, KeyScope.PREDICT, request.model_name)
        request_id = request_id_from(caller.request_id or request.id)
        started = time.perf_counter()
        version = request.model_version or None
        try:
            inference = InferenceRequest(
                request.model_name,
                version,
                self._inputs(request),
                tuple(codecs.requested_outputs(request)),
                request_id,
                caller.routing_key,
                timeout_s=remaining_s,
            )
            result = await self.state.dataplane.infer(inference)
        except MdeployError as error:
            self._observe(request.model_name, version, error.http_status, started)
            raise
        self._observe(result.model, result.version, 200, started)
        response = pb.ModelInferResponse(model_name=result.model, model_version=result.version, id=request.id)
        for name, array in result.outputs.items():
            codecs.encode_output(response, name, array)
        response.parameters[REQUEST_ID].string_param = request_id
        return response, grant, request_id

    def _inputs(self, request: pb.ModelInferRequest) -> dict[str, Any]:
        """The request's tensors, refused before decoding when one is over the gateway's bound."""
        limit = self.state.settings.max_elements_per_tensor
        for tensor in request.inputs:
            count = codecs.element_count(tensor.name, list(tensor.shape))
            if count > limit:
                raise PayloadTooLarge(f"input '{tensor.name}' has {count} elements; the limit is {limit}")
        return codecs.decode_request_inputs(request)

    def _observe(self, model: str, version: str | None, code: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.state.metrics.observe_request(model, version or "", PROTOCOL, code, elapsed)

    @answered
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        response, grant, request_id = await self._infer(request, Caller.of(context), context.time_remaining())
        # Trailing, not initial, metadata: it goes out with the status, in the same batch of
        # operations; sending initial metadata first costs the call a batch of its own.
        context.set_trailing_metadata(((REQUEST_ID, request_id), *_metadata(grant.rate.headers())))
        return response

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[StreamRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each message is authorised and counted on its own; answers (or their errors, in
        ``error_message`` as Triton sends them) go out as they complete."""
        try:
            caller = Caller.of(context)
        except MdeployError as error:
            await _abort(context, error)
            return

        async def infer(request: StreamRequest) -> pb.ModelInferResponse:
            return (await self._infer(request, caller, None))[0]

        async for answer in answer_stream(request_iterator, infer, _message_of):
            yield answer

    # ---- repository ----

    @answered
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        caller = Caller.of(context)
        scopes = model_repository.INDEX_SCOPES
        scope = await self.auth.held_scope(caller.authorization, caller.api_key, scopes, caller.address)
        grant = await self._authorize(caller, scope)
        entries = await model_repository.index(self.state.registry, grant.key, request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**entry.model_dump()) for entry in entries]
        )

    @answered
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        grant = await self._authorize(Caller.of(context), KeyScope.ADMIN)
        if request.parameters:
            raise Unsupported(
                "RepositoryModelLoad takes no config or file parameters on the gateway: push a package "
                "(mdeploy push) to serve a new model or version"
            )
        await self.state.releases.load(request.model_name, f"key:{grant.key.id}")
        return pb.RepositoryModelLoadResponse()

    @answered
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        grant = await self._authorize(Caller.of(context), KeyScope.ADMIN)
        await self.state.releases.unload(request.model_name, f"key:{grant.key.id}", "gRPC")
        return pb.RepositoryModelUnloadResponse()

    # ---- not offered by the gateway: shared memory, trace and log settings ----

    async def _unsupported(self, what: str, context: Context) -> Any:
        await self._authorize(Caller.of(context), KeyScope.ADMIN)
        raise Unsupported(f"{what} is not supported by the mdeploy gateway")

    @answered
    async def SystemSharedMemoryStatus(self, request: Any, context: Context) -> Any:
        return await self._unsupported("SystemSharedMemoryStatus", context)

    @answered
    async def SystemSharedMemoryRegister(self, request: Any, context: Context) -> Any:
        return await self._unsupported("SystemSharedMemoryRegister", context)

    @answered
    async def SystemSharedMemoryUnregister(self, request: Any, context: Context) -> Any:
        return await self._unsupported("SystemSharedMemoryUnregister", context)

    @answered
    async def CudaSharedMemoryStatus(self, request: Any, context: Context) -> Any:
        return await self._unsupported("CudaSharedMemoryStatus", context)

    @answered
    async def CudaSharedMemoryRegister(self, request: Any, context: Context) -> Any:
        return await self._unsupported("CudaSharedMemoryRegister", context)

    @answered
    async def CudaSharedMemoryUnregister(self, request: Any, context: Context) -> Any:
        return await self._unsupported("CudaSharedMemoryUnregister", context)

    @answered
    async def TraceSetting(self, request: Any, context: Context) -> Any:
        return await self._unsupported("TraceSetting", context)

    @answered
    async def LogSettings(self, request: Any, context: Context) -> Any:
        return await self._unsupported("LogSettings", context)


def _message_of(error: Exception) -> str:
    return _status(error)[1]


def model_metadata(served: ServedVersion, versions: Sequence[str]) -> pb.ModelMetadataResponse:
    def tensor(spec: Any) -> pb.ModelMetadataResponse.TensorMetadata:
        return pb.ModelMetadataResponse.TensorMetadata(
            name=spec.name, datatype=spec.datatype, shape=spec.shape
        )

    return pb.ModelMetadataResponse(
        name=served.name,
        versions=list(versions),
        platform=served.platform,
        inputs=[tensor(spec) for spec in served.signature.inputs],
        outputs=[tensor(spec) for spec in served.signature.outputs],
    )
