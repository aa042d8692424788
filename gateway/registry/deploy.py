"""What the registry asks of an inference server, over the v2 repository extension.

A load replaces the model's whole version set with the versions it carries (Triton's rule),
so every call sends the configuration and the files of every version that should be served.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from core.errors import DeadlineExceeded, MdeployError, ModelLoadError, Unavailable
from gateway.backends import Backend, map_rpc_error
from protos.generated import inference_pb2 as pb

LOAD_TIMEOUT_S = 300.0
"""A load builds an onnxruntime session per version: far slower than a prediction."""
INDEX_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Desired:
    """What a backend should serve of one model: versions, their config and their files."""

    model: str
    versions: tuple[int, ...]
    config_json: str
    files: dict[str, bytes]


async def load(backend: Backend, desired: Desired) -> None:
    request = pb.RepositoryModelLoadRequest(model_name=desired.model)
    request.parameters["config"].string_param = desired.config_json
    for relative, data in desired.files.items():
        request.parameters[f"file:{relative}"].bytes_param = data
    try:
        await backend.stub.RepositoryModelLoad(request, timeout=LOAD_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        raise _load_error(error, backend, desired) from None


async def unload(backend: Backend, model: str) -> None:
    request = pb.RepositoryModelUnloadRequest(model_name=model)
    try:
        await backend.stub.RepositoryModelUnload(request, timeout=LOAD_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        raise map_rpc_error(error, backend.address) from None


async def inventory(backend: Backend) -> dict[str, set[int]]:
    """The versions ``backend`` serves now (READY), by model."""
    try:
        reply = await backend.stub.RepositoryIndex(
            pb.RepositoryIndexRequest(ready=True), timeout=INDEX_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as error:
        raise map_rpc_error(error, backend.address) from None
    served: dict[str, set[int]] = {}
    for entry in reply.models:
        if entry.state == "READY" and entry.version.isdigit():
            served.setdefault(entry.name, set()).add(int(entry.version))
    return served


def _load_error(error: grpc.aio.AioRpcError, backend: Backend, desired: Desired) -> MdeployError:
    mapped = map_rpc_error(error, backend.address)
    if isinstance(mapped, Unavailable | DeadlineExceeded):
        return mapped
    versions = ", ".join(str(v) for v in desired.versions)
    return ModelLoadError(
        f"inference server {backend.address} refused to load model '{desired.model}' "
        f"version(s) {versions}: {mapped.message}"
    )
