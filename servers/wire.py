"""Protobuf ⇄ server domain: the one place the servicer's messages are built and read."""

from __future__ import annotations

import numpy as np

from core.errors import InvalidInput
from core.signature import TensorSpec
from protos import codecs
from protos.generated import inference_pb2 as pb
from servers.model_version import ModelVersion
from servers.repository import IndexEntry, LoadedModel
from servers.statistics import Duration, VersionStatistics


def check_input_sizes(request: pb.ModelInferRequest, max_elements: int) -> None:
    """Refuse absurd shapes before any buffer is decoded."""
    for tensor in request.inputs:
        count = codecs.element_count(tensor.name, list(tensor.shape))
        if count > max_elements:
            raise InvalidInput(
                f"input '{tensor.name}': {count} elements is over the server's limit of {max_elements}"
            )


def timeout_seconds(request: pb.ModelInferRequest, grpc_remaining: float | None) -> float | None:
    """The tighter of the request's ``timeout`` parameter (microseconds) and the gRPC deadline."""
    candidates = [grpc_remaining] if grpc_remaining is not None else []
    if "timeout" in request.parameters:
        if request.parameters["timeout"].WhichOneof("parameter_choice") != "int64_param":
            raise InvalidInput("parameter 'timeout' must be an int64_param (microseconds)")
        micros = request.parameters["timeout"].int64_param
        if micros < 0:
            raise InvalidInput("parameter 'timeout' must be a non-negative number of microseconds")
        if micros > 0:
            candidates.append(micros / 1e6)
    return min(candidates) if candidates else None


def infer_response(
    request: pb.ModelInferRequest, version: ModelVersion, outputs: dict[str, np.ndarray]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=version.name, model_version=str(version.version), id=request.id
    )
    for name, array in outputs.items():
        codecs.encode_output(response, name, array)
    return response


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)


def model_metadata(served: LoadedModel, version: ModelVersion) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=served.name,
        versions=[str(v) for v in sorted(served.versions)],
        platform=version.config.platform,
        inputs=[_tensor_metadata(spec) for spec in version.signature.inputs],
        outputs=[_tensor_metadata(spec) for spec in version.signature.outputs],
    )


def _duration(duration: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=duration.count, ns=duration.ns)


def model_statistics(version: ModelVersion) -> pb.ModelStatistics:
    s: VersionStatistics = version.statistics
    return pb.ModelStatistics(
        name=version.name,
        version=str(version.version),
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(s.success),
            fail=_duration(s.fail),
            queue=_duration(s.queue),
            compute_input=_duration(s.compute_input),
            compute_infer=_duration(s.compute_infer),
            compute_output=_duration(s.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for size, b in sorted(s.batches.items())
        ],
    )


def repository_index(entries: list[IndexEntry]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=e.name, version=e.version, state=e.state.value, reason=e.reason
            )
            for e in entries
        ]
    )


def load_parameters(request: pb.RepositoryModelLoadRequest) -> tuple[str | None, dict[str, bytes]]:
    """The ``config`` JSON and ``file:<version>/<name>`` overrides of a load request."""
    config: str | None = None
    files: dict[str, bytes] = {}
    for key, value in request.parameters.items():
        if key == "config":
            if value.WhichOneof("parameter_choice") != "string_param":
                raise InvalidInput(
                    "load parameter 'config' must be a string holding the model config as JSON"
                )
            config = value.string_param
        elif key.startswith("file:"):
            if value.WhichOneof("parameter_choice") != "bytes_param":
                raise InvalidInput(f"load parameter '{key}' must carry bytes")
            files[key.removeprefix("file:")] = value.bytes_param
        else:
            raise InvalidInput(
                f"unknown load parameter '{key}'; expected 'config' or 'file:<version>/<name>'"
            )
    return config, files
