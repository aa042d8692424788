"""The one data plane: every front end (REST v1, REST v2, later gRPC) calls :meth:`DataPlane.infer`.

A request is checked against the served version's signature and the gateway's bounds before
any backend call, then joins that version's micro-batcher: concurrent requests become one
ModelInfer to the least busy inference server, and the answer is split back per request.
The batcher is adaptive: a lone request goes at once; while a batch is in flight, arrivals
accumulate up to the batch size or the delay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.backends import BackendPool
from gateway.catalog import ModelCatalog, ServedVersion
from gateway.settings import GatewaySettings
from mdeploy import tensor_batch, validation
from mdeploy.batching import Batcher, BatchPolicy, Queued
from mdeploy.errors import PayloadTooLarge
from mdeploy.tensor_batch import TensorRequest, Tensors
from protos import codecs
from protos.generated import inference_pb2 as pb


@dataclass(frozen=True)
class InferenceRequest:
    """A prediction request, whichever front end it came through."""

    model: str
    version: str | None
    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...] = ()
    request_id: str = ""


@dataclass(frozen=True)
class InferenceResult:
    model: str
    version: str
    outputs: Tensors
    served: ServedVersion


@dataclass(frozen=True)
class BatcherStats:
    model: str
    version: str
    queue_length: int
    batches_in_flight: int


class DataPlane:
    def __init__(
        self,
        catalog: ModelCatalog,
        pool: BackendPool,
        settings: GatewaySettings,
        on_batch: Callable[[ServedVersion, int], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.pool = pool
        self.settings = settings
        self._on_batch = on_batch or (lambda served, rows: None)
        self._batchers: dict[tuple[str, str], Batcher[TensorRequest, Tensors]] = {}

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        served = self.catalog.resolve(request.model, request.version)
        self._check_bounds(request.inputs)
        rows = validation.check_inputs(served.signature, request.inputs, served.max_batch_size)
        wanted = validation.check_outputs(served.signature, request.outputs)
        outputs = await self._batcher(served).submit(TensorRequest(request.inputs, wanted, rows))
        return InferenceResult(served.name, served.version, outputs, served)

    def batcher_stats(self) -> list[BatcherStats]:
        return [
            BatcherStats(model, version, b.queue_length, b.batches_in_flight)
            for (model, version), b in self._batchers.items()
        ]

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close(drain=True)

    def _check_bounds(self, inputs: Mapping[str, np.ndarray]) -> None:
        limits = self.settings
        for name, array in inputs.items():
            if array.size > limits.max_elements_per_tensor:
                raise PayloadTooLarge(
                    f"input '{name}' has {array.size} elements; the limit is {limits.max_elements_per_tensor}"
                )
            if array.ndim and array.shape[0] > limits.max_rows_per_request:
                rows, limit = array.shape[0], limits.max_rows_per_request
                raise PayloadTooLarge(f"input '{name}' has {rows} rows; the limit is {limit} per request")

    def _batcher(self, served: ServedVersion) -> Batcher[TensorRequest, Tensors]:
        key = (served.name, served.version)
        batcher = self._batchers.get(key)
        if batcher is None:
            s = self.settings
            batched = served.max_batch_size > 0
            policy = BatchPolicy(
                max_batch_size=min(s.batch_max_rows, served.max_batch_size) if batched else 1,
                max_queue_delay_s=s.batch_max_delay_ms / 1000,
                max_queue_size=s.batch_max_queue,
                concurrency=s.batch_concurrency,
                merge=batched,
                adaptive=True,
            )

            async def run(batch: Sequence[Queued[TensorRequest]]) -> Sequence[Tensors | BaseException]:
                return await self._run(served, [entry.item for entry in batch])

            batcher = tensor_batch.batcher(policy, run, f"model '{served.name}'")
            self._batchers[key] = batcher
        return batcher

    async def _run(self, served: ServedVersion, works: list[TensorRequest]) -> list[Tensors | BaseException]:
        request = pb.ModelInferRequest(model_name=served.name, model_version=served.version)
        feeds = tensor_batch.merge(works, [spec.name for spec in served.signature.inputs])
        for name, array in feeds.items():
            codecs.encode_input(request, name, array)
        for name in tensor_batch.wanted_outputs(works):
            request.outputs.add(name=name)
        self._on_batch(served, sum(w.rows for w in works))
        response = await self.pool.infer(request)
        return tensor_batch.split(works, codecs.decode_response_outputs(response), served.name)
