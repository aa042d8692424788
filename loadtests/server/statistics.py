"""mdeploy-server's own statistics of a model (Triton's ModelStatistics), read around a window.

They say where a request's time went inside the server: queue, merging inputs, onnxruntime,
splitting outputs; the rest of what the client sees is gRPC and the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Counters:
    """A model's cumulative statistics (Triton's ModelStatistics); subtract two for a run."""

    rows: int = 0
    executions: int = 0
    requests: int = 0
    request_ns: int = 0  # time inside the model version: validation, queue, execution
    queue_ns: int = 0
    merge_ns: int = 0  # per execution, summed (batch_stats): concatenating the inputs
    infer_ns: int = 0  # per execution, summed: onnxruntime's run as the worker thread sees it
    split_ns: int = 0

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f) - getattr(other, f) for f in self.__dataclass_fields__))

    def per_request_us(self, ns: int) -> float:
        return ns / 1e3 / max(self.requests, 1)

    def per_execution_us(self, ns: int) -> float:
        return ns / 1e3 / max(self.executions, 1)

    @property
    def mean_batch(self) -> float:
        return self.rows / max(self.executions, 1)


def model_counters(address: str, model: str) -> Counters:
    with grpc.insecure_channel(address) as channel:
        stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
            pb.ModelStatisticsRequest(name=model), timeout=10
        )
    version = stats.model_stats[0]
    inference, batches = version.inference_stats, version.batch_stats
    return Counters(
        rows=int(version.inference_count),
        executions=int(version.execution_count),
        requests=int(inference.success.count),
        request_ns=int(inference.success.ns),
        queue_ns=int(inference.queue.ns),
        merge_ns=sum(int(b.compute_input.ns) for b in batches),
        infer_ns=sum(int(b.compute_infer.ns) for b in batches),
        split_ns=sum(int(b.compute_output.ns) for b in batches),
    )
