"""Evaluating a version on a labelled set through the real serving path, for gates and ``compare``.

The set is an ``.npz`` of the model's inputs by name, plus optionally ``__labels__`` (class
indices, or class names when the package has labels). Its rows go through
:meth:`DataPlane.infer` with the version named, so they take the same checks, batchers and
inference servers as any request:

* in requests of up to ``BATCH_ROWS`` rows, for the answers and ``rows_per_s``;
* the first ``LATENCY_REQUESTS`` rows again as 1-row requests, one at a time, for ``p50_ms`` and
  ``p99_ms``;
* and, for ``agreement``, through the live version too, compared row by row as shadow copies are
  (``gateway.routing.shadow``).

``accuracy`` needs labels and a label the model predicts, ``logloss`` labels and a probability
output (``core.answers``). What cannot be measured is null, with the reason.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import AwareDatetime, BaseModel

from core.answers import agreeing_rows, label_metrics
from core.errors import InvalidInput
from core.gates import Gate, judge
from gateway.catalog import ServedVersion
from gateway.dataplane import DataPlane, InferenceRequest

LABELS_KEY = "__labels__"
BATCH_ROWS = 32
LATENCY_REQUESTS = 200


@dataclass(frozen=True)
class EvalSet:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    rows: int
    digest: str
    """sha256 of the uploaded bytes: which data an evaluation used."""


def read_eval_set(data: bytes, served: ServedVersion, max_rows: int) -> EvalSet:
    """The uploaded ``.npz``, checked against ``served``'s inputs; InvalidInput saying what to fix."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise InvalidInput(f"the evaluation set is not a readable .npz of arrays: {error}") from None
    labels = arrays.pop(LABELS_KEY, None)
    expected = [spec.name for spec in served.signature.inputs]
    if sorted(arrays) != sorted(expected):
        raise InvalidInput(
            f"the evaluation set has arrays {sorted(arrays)}; model '{served.name}' takes inputs {expected} "
            f"(and optionally {LABELS_KEY})"
        )
    counts = {name: (array.shape[0] if array.ndim else 0) for name, array in arrays.items()}
    rows = min(counts.values())
    if len(set(counts.values())) != 1 or rows < 1:
        raise InvalidInput(f"the evaluation set's inputs need the same number of rows (at least 1): {counts}")
    if rows > max_rows:
        raise InvalidInput(f"the evaluation set has {rows} rows; the limit is {max_rows}")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != rows):
        raise InvalidInput(f"labels need one value per row: shape {list(labels.shape)} for {rows} rows")
    return EvalSet(arrays, labels, rows, hashlib.sha256(data).hexdigest())


class GateResult(BaseModel):
    gate: str
    value: float | None
    passed: bool
    reason: str


class Evaluation(BaseModel):
    """A version measured on an evaluation set, and the gates judged on it."""

    model: str
    version: str
    against: str | None
    """The live version ``agreement`` compares with (null when the version is live itself)."""
    rows: int
    data_sha256: str
    metrics: dict[str, float | None]
    unmeasured: dict[str, str]
    """Why a metric is null: e.g. accuracy without labels."""
    gates: list[GateResult]
    passed: bool | None
    """Every gate passed; null when no gate was given."""
    promoted: bool = False
    at: AwareDatetime | None = None
    by: str = ""


async def evaluate(
    dataplane: DataPlane,
    served: ServedVersion,
    live: ServedVersion | None,
    data: EvalSet,
    gates: list[Gate],
) -> Evaluation:
    outputs, rows_per_s = await _answers(dataplane, served, data)
    latencies = await _latencies(dataplane, served, data)
    metrics: dict[str, float | None] = {
        "rows_per_s": rows_per_s,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
    }
    labelled, unmeasured = label_metrics(outputs, served.label_output, served.labels, data.labels)
    metrics.update(labelled)
    against = None
    if live is not None and live.version != served.version:
        against = live.version
        theirs, _ = await _answers(dataplane, live, data)
        same = agreeing_rows(theirs, outputs, live.label_output)
        metrics["agreement"] = float(np.mean(same)) if same is not None else 0.0
    else:
        unmeasured["agreement"] = "the version is the live one; there is nothing to agree with"
    verdicts = judge(gates, metrics, unmeasured)
    return Evaluation(
        model=served.name,
        version=served.version,
        against=against,
        rows=data.rows,
        data_sha256=data.digest,
        metrics=metrics,
        unmeasured=unmeasured,
        gates=[GateResult(gate=v.gate, value=v.value, passed=v.passed, reason=v.reason) for v in verdicts],
        passed=all(v.passed for v in verdicts) if verdicts else None,
    )


def _request(served: ServedVersion, inputs: Mapping[str, np.ndarray]) -> InferenceRequest:
    # Not live traffic: an evaluation set must not count as what clients send (drift).
    return InferenceRequest(served.name, served.version, inputs, served=served, live=False)


async def _answers(
    dataplane: DataPlane, served: ServedVersion, data: EvalSet
) -> tuple[dict[str, np.ndarray], float]:
    """Every row's outputs, in requests of up to BATCH_ROWS rows; and the rows per second."""
    step = max(1, min(BATCH_ROWS, served.max_batch_size)) if served.max_batch_size > 0 else 1
    parts: dict[str, list[np.ndarray]] = {}
    started = time.perf_counter()
    for first in range(0, data.rows, step):
        chunk = {name: array[first : first + step] for name, array in data.inputs.items()}
        if served.max_batch_size <= 0:  # a model without batching takes one row, unbatched
            chunk = {name: array[0] for name, array in chunk.items()}
        result = await dataplane.infer(_request(served, chunk))
        for name, array in result.outputs.items():
            parts.setdefault(name, []).append(array if served.max_batch_size > 0 else array[np.newaxis])
    elapsed = time.perf_counter() - started
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}, data.rows / elapsed


async def _latencies(dataplane: DataPlane, served: ServedVersion, data: EvalSet) -> np.ndarray:
    """Milliseconds of 1-row requests, one at a time, over the first LATENCY_REQUESTS rows."""
    times = []
    for row in range(min(LATENCY_REQUESTS, data.rows)):
        if served.max_batch_size > 0:
            inputs = {name: array[row : row + 1] for name, array in data.inputs.items()}
        else:
            inputs = {name: array[row] for name, array in data.inputs.items()}
        started = time.perf_counter()
        await dataplane.infer(_request(served, inputs))
        times.append((time.perf_counter() - started) * 1000.0)
    return np.array(times)
