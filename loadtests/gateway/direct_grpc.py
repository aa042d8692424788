"""Sequential ModelInfer calls straight to the inference server: the floor under the gateway's p50.

The gateway's added latency at one request in flight is its p50 minus this one's. Two clients:

* ``stub``: the generated sync stub with the request built once and each reply decoded. It does
  the least work a gRPC client can, so the difference charged to the gateway is the largest.
  This is the one the target uses.
* ``tritonclient``: ``tritonclient.grpc`` as a user calls it (request built on every call).

Both run in this process, one call after another, after a warm-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from loadtests.common.procstat import process_cpu_s, self_cpu_s
from protos import codecs
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc

INPUT = "pixels"
OUTPUTS = ("label", "probabilities")  # what the gateway asks for a v1 request: every output


@dataclass(frozen=True)
class DirectResult:
    client: str
    requests: int
    p50_ms: float
    p99_ms: float
    client_cpu_s: float
    server_cpu_s: float

    def us_per_request(self, cpu_s: float) -> float:
        return 1e6 * cpu_s / max(self.requests, 1)


@dataclass(frozen=True)
class Call:
    """One model version on one server, and the 1-row input sent to it."""

    address: str
    model: str
    version: str
    row: np.ndarray  # FP32 [1, 64]
    server_pid: int


def measure_stub(call: Call, duration_s: float, warmup_s: float) -> DirectResult:
    request = pb.ModelInferRequest(model_name=call.model, model_version=call.version)
    codecs.encode_input(request, INPUT, call.row)
    for name in OUTPUTS:
        request.outputs.add(name=name)
    with grpc.insecure_channel(call.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def once() -> None:
            outputs = codecs.decode_response_outputs(stub.ModelInfer(request, timeout=10))
            if set(outputs) != set(OUTPUTS):
                raise RuntimeError(f"unexpected outputs {sorted(outputs)}")

        return _sequential("stub", once, call.server_pid, duration_s, warmup_s)


def measure_tritonclient(call: Call, duration_s: float, warmup_s: float) -> DirectResult:
    import tritonclient.grpc as triton  # heavy import; only this measurement needs it

    client = triton.InferenceServerClient(url=call.address)
    try:
        pixels = triton.InferInput(INPUT, list(call.row.shape), "FP32")
        pixels.set_data_from_numpy(call.row)
        wanted = [triton.InferRequestedOutput(name) for name in OUTPUTS]

        def once() -> None:
            result = client.infer(call.model, [pixels], model_version=call.version, outputs=wanted)
            result.as_numpy("probabilities")

        return _sequential("tritonclient", once, call.server_pid, duration_s, warmup_s)
    finally:
        client.close()


def _sequential(
    client: str, once: Callable[[], None], server_pid: int, duration_s: float, warmup_s: float
) -> DirectResult:
    _repeat(once, warmup_s)
    client_s, server_s = self_cpu_s(), process_cpu_s(server_pid)
    latencies = _repeat(once, duration_s)
    client_s, server_s = self_cpu_s() - client_s, process_cpu_s(server_pid) - server_s
    p50, p99 = np.percentile(np.asarray(latencies) * 1e3, [50, 99])
    return DirectResult(client, len(latencies), float(p50), float(p99), client_s, server_s)


def _repeat(once: Callable[[], None], duration_s: float) -> list[float]:
    """Latencies (s) of calls made one after another for ``duration_s``."""
    latencies = []
    end = time.perf_counter() + duration_s
    while (started := time.perf_counter()) < end:
        once()
        latencies.append(time.perf_counter() - started)
    return latencies
