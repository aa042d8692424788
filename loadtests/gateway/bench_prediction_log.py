"""What the prediction log costs the gateway per request: PredictionLog in a loop, no network.

1-row answers of the tiny MLP's shape (64 FP32 inputs, 10 FP32 outputs) go through
``PredictionLog.observe`` (the request path: a dict lookup, and for a logged model a random
draw, and for a sampled request an append to a bounded deque) and, every ``--flush`` requests,
the flush that the writer thread runs (rows to Arrow, one zstd Parquet file written to a
temporary folder, rotation under the cap). Reported in µs of CPU per request, the request path
and the writer apart, for a model that is not logged and for several sample rates. The writer
runs in its own thread in the gateway, off the event loop, but holds the GIL for part of it.

Run: ``python -m loadtests.gateway.bench_prediction_log [--requests 50000] [--flush 1000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from core.signature import Signature, TensorSpec
from gateway.catalog import ServedVersion
from gateway.predictionlog.folder import LogFolder
from gateway.predictionlog.log import PredictionLog
from gateway.predictionlog.store import LogConfig
from loadtests.common.tables import table

RATES = (None, 0.05, 0.2, 1.0)
"""None: the model is not logged (the default)."""
IN_FLIGHT = 64


def measure(folder: Path, rate: float | None, requests: int, flush_every: int) -> tuple[float, float]:
    """(request path µs, writer µs) per request."""
    log = PredictionLog(LogFolder(folder), seed=0, max_queued=flush_every + IN_FLIGHT)
    if rate is not None:
        log.configure({"tiny": LogConfig("tiny", rate, 1024 * 2**20, 0.0, "bench")})
    served = ServedVersion(
        "tiny", "1", Signature((TensorSpec("x", "FP32", (-1, 64)),), (TensorSpec("y", "FP32", (-1, 10)),)), 64
    )
    rows = np.random.default_rng(0).standard_normal((IN_FLIGHT, 64)).astype(np.float32)
    outputs = np.random.default_rng(1).standard_normal((IN_FLIGHT, 10)).astype(np.float32)
    inputs = [{"x": rows[i : i + 1]} for i in range(IN_FLIGHT)]
    answers = [{"y": outputs[i : i + 1]} for i in range(IN_FLIGHT)]
    ids = [f"{i:032x}" for i in range(IN_FLIGHT)]
    observe_s = write_s = 0.0
    for sent in range(0, requests, IN_FLIGHT):
        started = time.process_time()
        for i in range(IN_FLIGHT):
            log.observe(served, inputs[i], answers[i], ids[i])
        observe_s += time.process_time() - started
        if (sent + IN_FLIGHT) % flush_every < IN_FLIGHT:
            started = time.process_time()
            log.flush()
            write_s += time.process_time() - started
    started = time.process_time()
    log.flush()
    write_s += time.process_time() - started
    return observe_s / requests * 1e6, write_s / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_prediction_log", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--flush", type=int, default=1000, help="requests per flush (a file)")
    args = parser.parse_args(argv)
    shown = table(
        f"Prediction log, µs of CPU per 1-row request ({args.requests:,}, a file every {args.flush:,})",
        ("sample rate", "request path", "writer (thread, off the loop)", "total"),
        1,
    )
    for rate in RATES:
        with tempfile.TemporaryDirectory(prefix="mdeploy-bench-log-") as folder:
            observe, write = measure(Path(folder), rate, args.requests, args.flush)
        shown.add_row(
            "off" if rate is None else f"{rate:g}", f"{observe:.2f}", f"{write:.2f}", f"{observe + write:.2f}"
        )
    Console(width=140).print(shown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
