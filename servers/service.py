"""The GRPCInferenceService servicer: translate, delegate to the repository, map errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from core import __version__
from core.errors import MdeployError, Unsupported
from protos import codecs
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc
from protos.servicing import Malformed, StreamRequest, answer_stream, answering_errors
from servers import wire
from servers.repository import ModelRepository
from servers.settings import ServerSettings

log = logging.getLogger(__name__)


EXTENSIONS = ["model_repository", "model_configuration", "statistics", "parameters"]


def _status(error: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    if isinstance(error, MdeployError):
        return error.grpc_code, error.message, ()
    log.exception("unexpected error", exc_info=error)
    return grpc.StatusCode.INTERNAL, "internal error; see the server log", ()


errors_to_status = answering_errors(_status)
"""Every failure leaves as a gRPC status with a message; never as a traceback."""


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, repository: ModelRepository, settings: ServerSettings) -> None:
        self.repository = repository
        self.settings = settings
        self.ready = False

    # ---- health and metadata ----

    @errors_to_status
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @errors_to_status
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    @errors_to_status
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            self.repository.version(request.name, request.version)
        except MdeployError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.ready)

    @errors_to_status
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="mdeploy", version=__version__, extensions=EXTENSIONS)

    @errors_to_status
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        version = self.repository.version(request.name, request.version)
        return wire.model_metadata(self.repository.model(request.name), version)

    @errors_to_status
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        version = self.repository.version(request.name, request.version)
        return pb.ModelConfigResponse(config=version.config)

    @errors_to_status
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            served = [self.repository.model(request.name)]
            if request.version:
                versions = [self.repository.version(request.name, request.version)]
            else:
                versions = [v for s in served for _, v in sorted(s.versions.items())]
        else:
            versions = [v for s in self.repository.loaded() for _, v in sorted(s.versions.items())]
        return pb.ModelStatisticsResponse(model_stats=[wire.model_statistics(v) for v in versions])

    # ---- inference ----

    async def _infer(self, request: StreamRequest, remaining: float | None) -> pb.ModelInferResponse:
        if isinstance(request, Malformed):
            raise request.error()
        version = self.repository.version(request.model_name, request.model_version)
        wire.check_input_sizes(request, self.settings.max_elements_per_input)
        inputs = codecs.decode_request_inputs(request)
        outputs = await version.infer(
            inputs, codecs.requested_outputs(request), wire.timeout_seconds(request, remaining)
        )
        return wire.infer_response(request, version, outputs)

    @errors_to_status
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await self._infer(request, context.time_remaining())

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[StreamRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests run concurrently; each answer (or its error) is sent as it completes."""

        async def infer(request: StreamRequest) -> pb.ModelInferResponse:
            return await self._infer(request, None)

        async for answer in answer_stream(request_iterator, infer, lambda error: _status(error)[1]):
            yield answer

    # ---- repository ----

    @errors_to_status
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        return wire.repository_index(self.repository.index(request.ready))

    @errors_to_status
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        self.repository.check_control()
        config, files = wire.load_parameters(request)
        await self.repository.load(request.model_name, config, files)
        log.info("model %s loaded at the request of %s", request.model_name, self._caller(context))
        return pb.RepositoryModelLoadResponse()

    @errors_to_status
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        self.repository.check_control()
        await self.repository.unload(request.model_name)
        log.info("model %s unloaded at the request of %s", request.model_name, self._caller(context))
        return pb.RepositoryModelUnloadResponse()

    def _caller(self, context: Any) -> str:
        """Who asked: every caller of a server with a token has presented it (the gateway)."""
        who = "the token holder" if self.settings.auth_token_file is not None else "an unauthenticated caller"
        return f"{who} at {context.peer()}"

    # ---- not supported: shared memory, trace and log settings ----

    @errors_to_status
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        raise Unsupported("SystemSharedMemoryStatus is not supported by mdeploy servers")

    @errors_to_status
    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        raise Unsupported("SystemSharedMemoryRegister is not supported by mdeploy servers")

    @errors_to_status
    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        raise Unsupported("SystemSharedMemoryUnregister is not supported by mdeploy servers")

    @errors_to_status
    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        raise Unsupported("CudaSharedMemoryStatus is not supported by mdeploy servers")

    @errors_to_status
    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        raise Unsupported("CudaSharedMemoryRegister is not supported by mdeploy servers")

    @errors_to_status
    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        raise Unsupported("CudaSharedMemoryUnregister is not supported by mdeploy servers")

    @errors_to_status
    async def TraceSetting(self, request: Any, context: Any) -> Any:
        raise Unsupported("TraceSetting is not supported by mdeploy servers")

    @errors_to_status
    async def LogSettings(self, request: Any, context: Any) -> Any:
        raise Unsupported("LogSettings is not supported by mdeploy servers")
