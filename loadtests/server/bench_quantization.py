"""Latency versus accuracy: float, optimised and quantised packages of the same models, side by side.

Each model is packaged as a user would (``modelpkg.build``): float, ``optimize``, ``quantize
dynamic`` and ``quantize static`` (calibrated on 256 training rows). Each package's model.onnx
then runs in this process on onnxruntime's CPU provider with its default threads, as
mdeploy-server runs it: p50 of 1-row calls, rows/s in 32-row calls, and, on held-out rows,
accuracy (digits) and agreement with the float model (``core.answers``). Ratios are against the
float package measured in the same run.

* ``digits-sklearn``: StandardScaler + LogisticRegression, the demo model;
* ``digits-keras``: the demo's dense Keras network (``--no-keras`` skips TensorFlow);
* ``mlp-big``: a compute-bound MLP 1024→2048→2048→10 given as ONNX, random weights; its outputs
  stand for 10 class scores (agreement of their arg-max, no accuracy).

Run: ``python -m loadtests.server.bench_quantization [--seconds 2] [--no-keras]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from core.answers import agreeing_rows, label_metrics
from core.onnxruntime_import import import_onnxruntime
from examples.digits import LABELS, load_data, train_keras, train_sklearn
from examples.onnx_models import mlp
from loadtests.common.tables import table
from modelpkg import read_package
from modelpkg.builder import build
from modelpkg.optimization import OptimizationRequest

VARIANTS: dict[str, Callable[[Mapping[str, np.ndarray]], OptimizationRequest | None]] = {
    "float": lambda calibration: None,
    "optimize": lambda calibration: OptimizationRequest(optimize=True),
    "dynamic int8": lambda calibration: OptimizationRequest(quantize="dynamic"),
    "static int8": lambda calibration: OptimizationRequest(quantize="static", calibration=calibration),
}


@dataclass(frozen=True)
class Subject:
    name: str
    model: Any
    samples: np.ndarray
    calibration: np.ndarray
    held_out: np.ndarray
    labels: np.ndarray | None
    options: dict[str, Any]


@dataclass(frozen=True)
class Row:
    model: str
    variant: str
    size: int
    p50_ms: float
    rows_per_s: float
    accuracy: float | None
    agreement: float


def subjects(keras: bool) -> list[Subject]:
    data = load_data()
    digits = {"input_names": ["pixels"], "labels": LABELS, "labels_output": "probabilities"}
    found = [
        Subject(
            "digits-sklearn",
            train_sklearn(data),
            data.x_test[:16],
            data.x_train[:256],
            data.x_test,
            data.y_test,
            {**digits, "output_names": ["label", "probabilities"]},
        )
    ]
    if keras:
        found.append(
            Subject(
                "digits-keras",
                train_keras(data),
                data.x_test[:16],
                data.x_train[:256],
                data.x_test,
                data.y_test,
                {**digits, "output_names": ["probabilities"]},
            )
        )
    rows = np.random.default_rng(0).standard_normal((768, 1024)).astype(np.float32)
    # Its 10 outputs stand for class scores: agreement is of their arg-max, as for the digits.
    classes = {"labels": [f"class {i}" for i in range(10)], "labels_output": "y"}
    big = mlp([1024, 2048, 2048, 10], seed=0)
    found.append(Subject("mlp-big", big, rows[:16], rows[:256], rows[256:], None, classes))
    return found


def _session(model: bytes) -> Any:
    ort = import_onnxruntime()
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _timed(session: Any, feeds: dict[str, np.ndarray], seconds: float) -> float:
    """Seconds per call, over calls made for ``seconds`` after a warm-up."""
    for _ in range(5):
        session.run(None, feeds)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, feeds)
        calls += 1
    return (time.perf_counter() - started) / calls


def _latency_p50(session: Any, name: str, rows: np.ndarray, calls: int = 300) -> float:
    times = []
    for row in range(calls):
        feed = {name: rows[row % rows.shape[0] : row % rows.shape[0] + 1]}
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000.0


def measure(subject: Subject, folder: Path, seconds: float) -> list[Row]:
    rows: list[Row] = []
    reference: dict[str, np.ndarray] | None = None
    for variant, request in VARIANTS.items():
        name = subject.options.get("input_names", ["x"])[0]
        path = build(
            subject.model,
            folder / f"{subject.name}-{variant.replace(' ', '-')}.pkg",
            name=subject.name,
            samples=subject.samples,
            code_dir=None,
            optimization=request({name: subject.calibration}),
            **subject.options,
        ).path
        package = read_package(path)
        session = _session(package.model)
        names = [output.name for output in session.get_outputs()]
        answers = dict(zip(names, session.run(names, {name: subject.held_out}), strict=True))
        reference = reference or answers
        label_output = package.manifest.labels.output if package.manifest.labels else None
        names = list(package.manifest.labels.names) if package.manifest.labels else []
        metrics, _ = label_metrics(answers, label_output, names, subject.labels)
        same = agreeing_rows(reference, answers, label_output)
        rows.append(
            Row(
                subject.name,
                variant,
                len(package.model),
                _latency_p50(session, name, subject.held_out),
                32 / _timed(session, {name: subject.held_out[:32]}, seconds),
                metrics.get("accuracy"),
                float(np.mean(same)) if same is not None else 0.0,
            )
        )
    return rows


def report(rows: list[Row]) -> None:
    shown = table(
        "Float, optimised and quantised packages (onnxruntime CPU, in process; ratios to float)",
        (
            "model",
            "variant",
            "model.onnx",
            "size",
            "p50 1 row",
            "speed-up",
            "rows/s batch 32",
            "ratio",
            "accuracy",
            "agreement",
        ),
        2,
    )
    floats = {row.model: row for row in rows if row.variant == "float"}
    for row in rows:
        base = floats[row.model]
        shown.add_row(
            row.model,
            row.variant,
            f"{row.size / 1024:,.0f} KiB",
            f"{row.size / base.size:.2f}x",
            f"{row.p50_ms:.3f} ms",
            f"{base.p50_ms / row.p50_ms:.2f}x",
            f"{row.rows_per_s:,.0f}",
            f"{row.rows_per_s / base.rows_per_s:.2f}x",
            "-" if row.accuracy is None else f"{row.accuracy:.4f}",
            f"{row.agreement:.1%}",
        )
    Console(width=180).print(shown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_quantization", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="seconds of 32-row calls per row (default 2)"
    )
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras model (no TensorFlow)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mdeploy-bench-quantization-") as folder:
        rows = [
            row
            for subject in subjects(not args.no_keras)
            for row in measure(subject, Path(folder), args.seconds)
        ]
    report(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
