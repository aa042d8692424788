"""What the prediction log tests share: a served version, counters that remember, a configured log."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from core.signature import Signature, TensorSpec
from gateway.catalog import ServedVersion
from gateway.predictionlog.folder import LogFolder
from gateway.predictionlog.log import LogCounters, PredictionLog
from gateway.predictionlog.store import LogConfig

MODEL = "iris"
SERVED = ServedVersion(
    MODEL,
    "1",
    Signature(
        (TensorSpec("x", "FP32", (-1, 4)), TensorSpec("note", "BYTES", (-1,))),
        (TensorSpec("label", "INT64", (-1,)), TensorSpec("scores", "FP32", (-1, 3))),
    ),
    64,
)


class Counted:
    """The log's counters, kept in Counters the test reads."""

    def __init__(self) -> None:
        self.written: Counter[tuple[str, str]] = Counter()
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.rotated: Counter[str] = Counter()

    def counters(self) -> LogCounters:
        return LogCounters(
            written=lambda model, kind, rows: self.written.update({(model, kind): rows}),
            dropped=lambda model, reason, rows: self.dropped.update({(model, reason): rows}),
            rotated=lambda model, files: self.rotated.update({model: files}),
        )


def config(sample_rate: float = 1.0, max_bytes: int = 2**30, model: str = MODEL) -> LogConfig:
    return LogConfig(model, sample_rate, max_bytes, 0.0, "key:test")


def logging_log(
    root: Path,
    counted: Counted,
    *,
    max_queued: int = 10_000,
    max_queued_bytes: int = 2**26,
    flush_s: float = 1.0,
) -> PredictionLog:
    """A log of ``MODEL`` (every request, 1 GiB) under ``root``, not started."""
    log = PredictionLog(
        LogFolder(root),
        counters=counted.counters(),
        seed=0,
        max_queued=max_queued,
        max_queued_bytes=max_queued_bytes,
        flush_s=flush_s,
    )
    log.configure({MODEL: config()})
    return log


def request(rows: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inputs and outputs of a request of ``rows`` rows of ``SERVED``."""
    random = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {
        "x": random.standard_normal((rows, 4)).astype(np.float32),
        "note": np.array([f"row {i}".encode() for i in range(rows)], dtype=object),
    }
    outputs: dict[str, np.ndarray] = {
        "label": random.integers(0, 3, rows).astype(np.int64),
        "scores": random.random((rows, 3)).astype(np.float32),
    }
    return inputs, outputs
