"""The one data plane: every front end (REST v1, REST v2, later gRPC) calls :meth:`DataPlane.infer`.

A request is checked against the served version's signature and the gateway's bounds before
any backend call, then joins that version's micro-batcher: concurrent requests become one
ModelInfer to the least busy inference server, and the answer is split back per request.
The batcher is adaptive: a lone request goes at once; while a batch is in flight, arrivals
accumulate up to the batch size or the delay.

A request without a version is routed by the model's deployment (``gateway.routing``): the
router picks the version (a staged one never), hears how it went (server-side failures and
latency feed the guard), and remembers the request id for feedback. A shadow candidate gets a
copy of the inputs in the background; its answer is compared with the one returned (the same
label for classifiers, equal within a tolerance for regressors), never returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core import tensor_batch, validation
from core.batching import Batcher, BatchPolicy, Queued
from core.errors import MdeployError, PayloadTooLarge
from core.tensor_batch import TensorRequest, Tensors
from gateway.catalog import ModelCatalog, ServedVersion
from gateway.routing.router import Router
from gateway.routing.shadow import answers_agree
from gateway.settings import GatewaySettings
from protos import codecs
from protos.generated import inference_pb2 as pb


@dataclass(slots=True)  # per request: a frozen dataclass costs ~4x to build
class InferenceRequest:
    """A prediction request, whichever front end it came through."""

    model: str
    version: str | None
    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...] = ()
    request_id: str = ""
    routing_key: str | None = None
    served: ServedVersion | None = None
    """What the front end resolved for ``model`` and ``version`` (v1 needs the signature to
    read its JSON), reused unless a deployment policy picks the version."""
    timeout_s: float | None = None
    """The client's deadline (gRPC): past it a request still queued is dropped (DEADLINE_EXCEEDED)."""
    live: bool = True
    """Live traffic, which drift sketches; False for the gateway's own evaluation sets."""


@dataclass(slots=True)  # per request: a frozen dataclass costs ~4x to build
class InferenceResult:
    model: str
    version: str
    outputs: Tensors
    served: ServedVersion


ShadowListener = Callable[[str, str, str], None]  # model, candidate version, agree|differ|error
AnswerListener = Callable[[ServedVersion, Mapping[str, np.ndarray], Tensors, str], None]
"""Hears every answered live request: the version, its inputs, outputs and request id (drift
sketches them, the prediction log keeps them)."""
OutcomeListener = Callable[[str, str, bool, float], None]
"""Hears how every live request that reached a version went: model, version, whether the server
side answered, seconds in the data plane (the time series, ``gateway.timeseries``)."""


class InferenceBackends(Protocol):
    """Where batches go: :class:`gateway.backends.BackendPool` (any v2 gRPC server behind it)."""

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """One batch's ModelInfer; MdeployError (Unavailable, DeadlineExceeded...) on failure."""
        ...


log = logging.getLogger(__name__)


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
        pool: InferenceBackends,
        settings: GatewaySettings,
        on_batch: Callable[[ServedVersion, int], None] | None = None,
        router: Router | None = None,
        on_shadow: ShadowListener | None = None,
        on_answer: AnswerListener | None = None,
        on_outcome: OutcomeListener | None = None,
    ) -> None:
        self.catalog = catalog
        self.pool = pool
        self.settings = settings
        self.router = router
        self._on_batch = on_batch or (lambda served, rows: None)
        self._on_shadow = on_shadow or (lambda model, version, result: None)
        self._on_answer = on_answer
        self._on_outcome = on_outcome
        self._batchers: dict[tuple[str, str], Batcher[TensorRequest, Tensors]] = {}
        self._shadows: set[asyncio.Task[None]] = set()

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        router = self.router
        if request.version is None and router is not None:
            return await self._infer_routed(request, router)
        served = request.served
        if served is None:
            served = self.catalog.resolve(request.model, request.version)
        work = self._checked(served, request)
        on_outcome = self._on_outcome if request.live else None
        if on_outcome is None:
            outputs = await self._batcher(served).submit(work, timeout_s=request.timeout_s)
        else:
            started = time.perf_counter()
            try:
                outputs = await self._batcher(served).submit(work, timeout_s=request.timeout_s)
            except MdeployError as error:
                ok = error.http_status < 500  # a bad request does not speak against the version
                on_outcome(served.name, served.version, ok, time.perf_counter() - started)
                raise
            on_outcome(served.name, served.version, True, time.perf_counter() - started)
        if self._on_answer is not None and request.live:
            self._on_answer(served, request.inputs, outputs, request.request_id)
        return InferenceResult(served.name, served.version, outputs, served)

    async def _infer_routed(self, request: InferenceRequest, router: Router) -> InferenceResult:
        """A request that a deployment policy routes: the router hears how it went."""
        routed = await router.route(request.model, request.routing_key)
        served = request.served
        if served is None or served.version != routed.version:
            served = self.catalog.resolve(request.model, routed.version)
        work = self._checked(served, request)
        started = time.perf_counter()
        try:
            outputs = await self._batcher(served).submit(work, timeout_s=request.timeout_s)
        except MdeployError as error:
            # Only failures of the server side speak against a version, not bad requests.
            ok = error.http_status < 500
            elapsed = time.perf_counter() - started
            router.observe(served.name, served.version, ok, elapsed)
            if self._on_outcome is not None and request.live:
                self._on_outcome(served.name, served.version, ok, elapsed)
            raise
        elapsed = time.perf_counter() - started
        router.observe(served.name, served.version, True, elapsed)
        if self._on_outcome is not None and request.live:
            self._on_outcome(served.name, served.version, True, elapsed)
        if routed.by_policy and request.request_id:
            await router.remember(request.request_id, served.name, served.version)
        if routed.shadow is not None:
            self._start_shadow(served, routed.shadow, work, outputs, elapsed)
        if self._on_answer is not None and request.live:
            self._on_answer(served, request.inputs, outputs, request.request_id)
        return InferenceResult(served.name, served.version, outputs, served)

    def _checked(self, served: ServedVersion, request: InferenceRequest) -> TensorRequest:
        """The request's inputs checked against the bounds and ``served``'s signature."""
        self._check_bounds(request.inputs)
        rows = validation.check_inputs(served.signature, request.inputs, served.max_batch_size)
        wanted = validation.check_outputs(served.signature, request.outputs)
        return TensorRequest(request.inputs, wanted, rows)

    def _start_shadow(
        self, answering: ServedVersion, version: str, work: TensorRequest, answered: Tensors, elapsed: float
    ) -> None:
        task = asyncio.create_task(self._shadow(answering, version, work, answered, elapsed))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(
        self, answering: ServedVersion, version: str, work: TensorRequest, answered: Tensors, elapsed: float
    ) -> None:
        """The candidate's answer to a copy, compared with the one returned (``gateway.routing.shadow``)."""
        model, router = answering.name, self.router
        started = time.perf_counter()
        try:
            shadow = self.catalog.resolve(model, version)
            outputs = await self._batcher(shadow).submit(work)
        except MdeployError as error:
            log.info("shadow version %s of %s failed: %s", version, model, error)
            self._on_shadow(model, version, "error")
            if router is not None:
                router.observe_shadow(model, version, "error", None)
                if error.http_status >= 500:
                    router.observe(model, version, False, time.perf_counter() - started, routed=False)
            return
        took = time.perf_counter() - started
        result = "agree" if answers_agree(answered, outputs, answering.label_output) else "differ"
        self._on_shadow(model, version, result)
        if router is not None:
            router.observe(model, version, True, took, routed=False)
            router.observe_shadow(model, version, result, (took - elapsed) * 1000.0)

    def batcher_stats(self) -> list[BatcherStats]:
        return [
            BatcherStats(model, version, b.queue_length, b.batches_in_flight)
            for (model, version), b in self._batchers.items()
        ]

    async def close(self) -> None:
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)
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
                concurrency=s.batch_concurrency or max(1, len(s.backends)),
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
