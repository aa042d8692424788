"""One loaded model version: its onnxruntime session, dynamic batcher and statistics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core import datatypes, tensor_batch, validation
from core.batching import BatchPolicy, Queued
from core.errors import Internal, InvalidInput, MdeployError
from core.signature import Signature
from core.tensor_batch import TensorRequest, Tensors
from protos.generated import model_config_pb2 as mc
from servers import config as model_config
from servers import runtime
from servers.statistics import VersionStatistics

log = logging.getLogger(__name__)


# Nanoseconds spent merging inputs, running the model, and splitting outputs.
Timings = tuple[int, int, int]


@dataclass(frozen=True)
class RuntimeOptions:
    device: str = "auto"
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    default_max_batch_size: int = 64
    default_max_queue_size: int = 1024
    allow_spinning: bool = False
    inline_batch_us: float = 200.0
    gpu_default_max_batch_size: int = 1024
    execution_provider: str = "cuda"
    engine_cache: Path | None = None

    def default_batch_for(self, session: ort.InferenceSession) -> int:
        """max_batch_size for models without one: a GPU keeps gaining from larger batches."""
        on_gpu = session.get_providers()[0] != runtime.CPU
        return self.gpu_default_max_batch_size if on_gpu else self.default_max_batch_size


def with_provider_report(config: mc.ModelConfig, session: ort.InferenceSession) -> mc.ModelConfig:
    """The config with the providers this version's session really uses, as ModelConfig parameters.

    ``execution_provider`` is the one that runs the model (onnxruntime assigns each node to the
    first provider that takes it); ``execution_providers`` lists all, in priority order.
    """
    active = session.get_providers()
    config.parameters["execution_provider"].string_value = active[0]
    config.parameters["execution_providers"].string_value = ",".join(active)
    options = session.get_provider_options().get(active[0], {})
    if "device_id" in options:
        config.parameters["device_id"].string_value = str(options["device_id"])
    return config


def batch_policy(config: mc.ModelConfig, default_max_queue_size: int) -> BatchPolicy:
    """Triton's dynamic_batching settings as a BatchPolicy (no dynamic_batching: no merging)."""
    dynamic = config.dynamic_batching if config.HasField("dynamic_batching") else None
    queue = dynamic.default_queue_policy if dynamic is not None else None
    instances = sum(group.count or 1 for group in config.instance_group) or 1
    return BatchPolicy(
        max_batch_size=max(config.max_batch_size, 1),
        max_queue_delay_s=(dynamic.max_queue_delay_microseconds / 1e6) if dynamic else 0.0,
        preferred_batch_sizes=tuple(dynamic.preferred_batch_size) if dynamic else (),
        max_queue_size=(queue.max_queue_size if queue and queue.max_queue_size else default_max_queue_size),
        concurrency=instances,
        merge=dynamic is not None and config.max_batch_size > 0,
    )


class ModelVersion:
    """Serves requests for one version; create it with :meth:`load`."""

    def __init__(
        self,
        name: str,
        version: int,
        config: mc.ModelConfig,
        signature: Signature,
        session: ort.InferenceSession,
        options: RuntimeOptions,
    ) -> None:
        self.name = name
        self.version = version
        self.config = config
        self.signature = signature
        self.statistics = VersionStatistics()
        self._session: ort.InferenceSession | None = session
        policy = batch_policy(config, options.default_max_queue_size)
        self._executor = ThreadPoolExecutor(policy.concurrency, thread_name_prefix=f"{name}-v{version}")
        self._batcher = tensor_batch.batcher(policy, self._run_batch, f"model '{name}'")
        queue = config.dynamic_batching.default_queue_policy
        self._default_timeout_s = queue.default_timeout_microseconds / 1e6 or None
        self._inline_below_ns = options.inline_batch_us * 1000
        self._run_ns = float("inf")  # moving average of one batch's run; measured at warm-up

    @classmethod
    async def load(
        cls, name: str, version: int, path: Path, config: mc.ModelConfig, options: RuntimeOptions
    ) -> ModelVersion:
        """Open the ONNX file, complete and check the config, warm up; raises ModelLoadError."""
        session = await asyncio.to_thread(
            runtime.create_session,
            path,
            config,
            device=options.device,
            intra_op_threads=options.intra_op_threads,
            inter_op_threads=options.inter_op_threads,
            allow_spinning=options.allow_spinning,
            execution_provider=options.execution_provider,
            engine_cache=options.engine_cache,
        )
        onnx_signature = runtime.session_signature(session, name)
        default_batch = options.default_batch_for(session)
        completed = with_provider_report(
            model_config.complete(config, name, onnx_signature, default_batch), session
        )
        signature = model_config.serving_signature(completed, onnx_signature)
        served = cls(name, version, completed, signature, session, options)
        await asyncio.to_thread(served._warm_up)
        return served

    @property
    def max_batch_size(self) -> int:
        return int(self.config.max_batch_size)

    @property
    def queue_length(self) -> int:
        return self._batcher.queue_length

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], timeout_s: float | None
    ) -> Tensors:
        """Validate, queue for a batch, run, and return the requested outputs."""
        started = time.perf_counter_ns()
        ok = False
        try:
            rows = validation.check_inputs(self.signature, inputs, self.max_batch_size)
            wanted = validation.check_outputs(self.signature, outputs)
            timeout = min(filter(None, (timeout_s, self._default_timeout_s)), default=None)
            result = await self._batcher.submit(TensorRequest(inputs, wanted, rows), timeout_s=timeout)
            ok = True
            return result
        finally:
            self.statistics.record_request(ok, time.perf_counter_ns() - started)

    async def _run_batch(self, batch: Sequence[Queued[TensorRequest]]) -> Sequence[Tensors | BaseException]:
        works = [entry.item for entry in batch]
        if self._run_ns < self._inline_below_ns:
            # Cheaper than a thread hand-off: run here, holding the loop for microseconds.
            results, timings = self._execute(works)
        else:
            loop = asyncio.get_running_loop()
            results, timings = await loop.run_in_executor(self._executor, self._execute, works)
        self._run_ns = timings[1] if self._run_ns == float("inf") else 0.9 * self._run_ns + 0.1 * timings[1]
        for entry in batch:
            self.statistics.queue.add(entry.started_ns - entry.enqueued_ns)
        self.statistics.record_execution(sum(w.rows for w in works), len(works), *timings)
        return results

    def _execute(self, works: list[TensorRequest]) -> tuple[list[Tensors | BaseException], Timings]:
        """Merge, run and split one batch (in a worker thread)."""
        session = self._session
        if session is None:
            raise Internal(f"model '{self.name}' version {self.version} is unloaded")
        t0 = time.perf_counter_ns()
        feeds = tensor_batch.merge(works, [spec.name for spec in self.signature.inputs])
        names = tensor_batch.wanted_outputs(works)
        t1 = time.perf_counter_ns()
        try:
            arrays = session.run(names, feeds)
        except ort.capi.onnxruntime_pybind11_state.InvalidArgument as error:
            raise InvalidInput(f"model '{self.name}' rejected the input: {error}") from None
        except Exception as error:
            raise Internal(f"model '{self.name}' failed to run: {error}") from None
        t2 = time.perf_counter_ns()
        results = tensor_batch.split(works, dict(zip(names, arrays, strict=True)), self.name)
        return results, (t1 - t0, t2 - t1, time.perf_counter_ns() - t2)

    def _warm_up(self) -> None:
        """One zero-filled row through the model so the first request is not slow."""
        shapes = [spec.shape[1:] if self.max_batch_size else spec.shape for spec in self.signature.inputs]
        if any(-1 in shape for shape in shapes) or any(s.datatype == "BYTES" for s in self.signature.inputs):
            return
        feeds = {
            spec.name: np.zeros(
                ((1,) if self.max_batch_size else ()) + shape, datatypes.to_numpy(spec.datatype)
            )
            for spec, shape in zip(self.signature.inputs, shapes, strict=True)
        }
        try:
            _, timings = self._execute(
                [TensorRequest(feeds, tuple(s.name for s in self.signature.outputs), 1)]
            )
            self._run_ns = timings[1]
        except MdeployError as error:
            log.warning("warm-up of %s v%d failed: %s", self.name, self.version, error.message)

    async def close(self) -> None:
        """Finish queued requests, then free the session."""
        await self._batcher.close(drain=True)
        self._executor.shutdown(wait=True)
        self._session = None
