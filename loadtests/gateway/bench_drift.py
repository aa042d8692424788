"""What drift sketching costs the gateway per request: DriftMonitor in a loop, no network.

A package of the tiny MLP (64 inputs, 10 outputs) carries a reference profile; 1-row answers go
through ``DriftMonitor.observe`` (the request path: one random draw, and for a sampled request
an append) and the background flush (``VersionSketches.ingest``: one batch per version into the
5m, 1h and 24h buckets), as in the gateway at 64 requests in flight (64 queued per flush).
Reported in µs of CPU per request for each sample rate, with the request path and the flush
apart. The budget is 10 µs per request at 64 in flight.

Run: ``python -m loadtests.gateway.bench_drift [--requests 20000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from core.signature import Signature, TensorSpec
from examples.onnx_models import mlp
from gateway.catalog import ServedVersion
from gateway.drift.monitor import DriftMonitor, StoredVersion
from loadtests.common.tables import table
from modelpkg import build, read_package

RATES = (0.0, 0.05, 0.2, 1.0)
IN_FLIGHT = 64


def measure(package: Path, rate: float, requests: int) -> tuple[float, float]:
    """(request path µs, flush µs) per request."""
    manifest = read_package(package).manifest
    monitor = DriftMonitor(lambda model, version: StoredVersion(manifest, package), rate, seed=0)
    served = ServedVersion(
        "tiny", "1", Signature((TensorSpec("x", "FP32", (-1, 64)),), (TensorSpec("y", "FP32", (-1, 10)),)), 64
    )
    rows = np.random.default_rng(0).standard_normal((IN_FLIGHT, 64)).astype(np.float32)
    outputs = np.random.default_rng(1).standard_normal((IN_FLIGHT, 10)).astype(np.float32)
    observe_s = flush_s = 0.0
    for _ in range(0, requests, IN_FLIGHT):
        started = time.process_time()
        for i in range(IN_FLIGHT):
            monitor.observe(served, {"x": rows[i : i + 1]}, {"y": outputs[i : i + 1]})
        observe_s += time.process_time() - started
        started = time.process_time()
        monitor.flush()
        flush_s += time.process_time() - started
    return observe_s / requests * 1e6, flush_s / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mdeploy-bench-drift-") as folder:
        package = Path(folder) / "tiny.pkg"
        reference = np.random.default_rng(2).standard_normal((2_000, 64)).astype(np.float32)
        build(
            mlp([64, 64, 10], seed=1),
            package,
            name="tiny",
            samples=reference[:8],
            reference=reference,
            code_dir=None,
        )
        shown = table(
            f"Drift sketching, µs of CPU per 1-row request ({args.requests:,}, {IN_FLIGHT} per flush)",
            ("sample rate", "request path", "flush (off the path)", "total", "budget 10 µs"),
            1,
        )
        for rate in RATES:
            observe, flush = measure(package, rate, args.requests)
            total = observe + flush
            shown.add_row(
                f"{rate:g}",
                f"{observe:.2f}",
                f"{flush:.2f}",
                f"{total:.2f}",
                "PASS" if total <= 10 else "MISS",
            )
    Console(width=140).print(shown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
