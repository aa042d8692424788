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

``accuracy`` needs labels and a label the model predicts: an integer output of one value per
row, else the arg-max of the output its labels index or of a probability output. ``logloss``
needs labels and a probability output. What cannot be measured is null, with the reason.
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

from core.errors import InvalidInput
from core.gates import Gate, judge
from gateway.catalog import ServedVersion
from gateway.dataplane import DataPlane, InferenceRequest
from gateway.routing.shadow import agreeing_rows, is_probabilities

LABELS_KEY = "__labels__"
BATCH_ROWS = 32
LATENCY_REQUESTS = 200
_PROBABILITY_FLOOR = 1e-15


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
    unmeasured: dict[str, str] = {}
    _label_metrics(served, outputs, data.labels, metrics, unmeasured)
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
    return InferenceRequest(served.name, served.version, inputs, served=served)


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


def _label_metrics(
    served: ServedVersion,
    outputs: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    metrics: dict[str, float | None],
    unmeasured: dict[str, str],
) -> None:
    if labels is None:
        unmeasured["accuracy"] = unmeasured["logloss"] = "no labels were given (--labels)"
        return
    truth = _label_indices(served, labels)
    predicted = predicted_labels(served, outputs)
    if predicted is None:
        unmeasured["accuracy"] = "the model predicts no label (no integer or probability output)"
    else:
        metrics["accuracy"] = float(np.mean(predicted == truth))
    probabilities = _probabilities(served, outputs)
    if probabilities is None:
        unmeasured["logloss"] = "the model has no probability output"
    elif truth.dtype.kind not in "iu" or truth.min() < 0 or truth.max() >= probabilities.shape[1]:
        unmeasured["logloss"] = f"labels must be class indices below {probabilities.shape[1]} for logloss"
    else:
        chosen = probabilities[np.arange(truth.shape[0]), truth]
        metrics["logloss"] = float(-np.mean(np.log(np.clip(chosen, _PROBABILITY_FLOOR, 1.0))))


def _label_indices(served: ServedVersion, labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64)
    if labels.dtype.kind in "US":
        if not served.labels:
            raise InvalidInput("labels are names, but the package has no class names; give class indices")
        index = {name: i for i, name in enumerate(served.labels)}
        unknown = sorted({str(label) for label in labels if str(label) not in index})
        if unknown:
            raise InvalidInput(
                f"unknown class names in the labels: {unknown[:5]}; classes: {list(served.labels)[:20]}"
            )
        return np.array([index[str(label)] for label in labels], np.int64)
    if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    raise InvalidInput(f"labels must be class indices (integers) or class names, not {labels.dtype}")


def predicted_labels(served: ServedVersion, outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The label each row gets: an integer output of one value per row, else the arg-max of the
    labelled output or of a probability output; None for a model that predicts no label."""
    for array in outputs.values():
        if array.dtype.kind in "iu" and (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
            return array.reshape(-1).astype(np.int64)
    scores = outputs.get(served.label_output) if served.label_output else None
    if scores is None or scores.ndim != 2:
        scores = _probabilities(served, outputs)
    return None if scores is None else np.argmax(scores, axis=1)


def _probabilities(served: ServedVersion, outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    labelled = outputs.get(served.label_output) if served.label_output else None
    if labelled is not None and is_probabilities(labelled) and labelled.ndim == 2:
        return labelled
    return next((a for a in outputs.values() if a.ndim == 2 and is_probabilities(a)), None)
