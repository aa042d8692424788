"""In-process onnxruntime throughput: what the server's sessions can do without any serving.

The session is made by the server's own ``servers.runtime.create_session`` with the server's
default settings (threads, device), so the only difference to the server is the serving.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from examples.onnx_models import mlp, write_version
from loadtests.common.procstat import machine_busy_s
from loadtests.server.targets import ModelSpec
from protos.generated import model_config_pb2 as mc
from servers.runtime import create_session
from servers.settings import ServerSettings


@dataclass(frozen=True)
class OrtResult:
    model: str
    batch: int
    rows_per_s: float
    us_per_run: float
    cpu_cores: float  # CPU seconds per second: how many cores onnxruntime kept busy
    others_cores: float  # cores other processes used meanwhile

    @property
    def cpu_us_per_row(self) -> float:
        return 1e6 * self.cpu_cores / self.rows_per_s


def measure(
    model: ModelSpec, batches: tuple[int, ...], warmup_s: float, duration_s: float, quiet_cores: float
) -> list[OrtResult]:
    """Per batch size, the best of up to 3 runs, stopping at the first undisturbed one.

    Other work on a shared machine only ever slows onnxruntime down, and the targets compare
    the server with this number: a disturbed baseline would flatter the server.
    """
    settings = ServerSettings()
    with tempfile.TemporaryDirectory() as folder:
        path = write_version(Path(folder), model.name, 1, mlp(list(model.sizes), seed=0))
        session = create_session(
            path,
            mc.ModelConfig(name=model.name),
            device=settings.device,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
        )
    return [_best_of(session, model, batch, warmup_s, duration_s, quiet_cores) for batch in batches]


def _best_of(
    session: ort.InferenceSession,
    model: ModelSpec,
    batch: int,
    warmup_s: float,
    duration_s: float,
    quiet_cores: float,
) -> OrtResult:
    results: list[OrtResult] = []
    while len(results) < 3:
        results.append(_measure_batch(session, model, batch, warmup_s, duration_s))
        if results[-1].others_cores <= quiet_cores:
            break
    return max(results, key=lambda r: r.rows_per_s)


def _measure_batch(
    session: ort.InferenceSession, model: ModelSpec, batch: int, warmup_s: float, duration_s: float
) -> OrtResult:
    feeds = {"x": np.random.default_rng(0).standard_normal((batch, model.width)).astype(np.float32)}
    _run_for(session, feeds, warmup_s)
    machine_start, cpu_start, wall_start = machine_busy_s(), time.process_time(), time.perf_counter()
    runs = _run_for(session, feeds, duration_s)
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    others = max(machine_busy_s() - machine_start - cpu, 0.0)
    return OrtResult(model.name, batch, runs * batch / wall, 1e6 * wall / runs, cpu / wall, others / wall)


def _run_for(session: ort.InferenceSession, feeds: dict[str, np.ndarray], seconds: float) -> int:
    runs = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        session.run(None, feeds)
        runs += 1
    return runs
