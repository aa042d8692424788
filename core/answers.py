"""What a model's answers mean, for comparing them: labels, probabilities, agreement, accuracy.

One set of rules for every place that compares answers: shadow copies in the gateway, release
gates, and ``mdeploy compare``.

* A row's **label** is an integer output of one value per row, else the arg-max of the output the
  package's labels index, else of a probability output (rows of non-negative scores summing to 1).
* Two answers **agree** on a row when they give the same label (classifiers), equal integers or
  strings, or floats equal within ``RTOL`` relative and ``ATOL`` of the first answer's scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from core.errors import InvalidInput

RTOL = 1e-3
ATOL = 1e-4
"""Absolute tolerance, times the largest magnitude of the first answer (at least 1)."""
_PROBABILITY_FLOOR = 1e-15


def is_probabilities(a: np.ndarray) -> bool:
    """Rows of non-negative scores that sum to 1: a classifier's class probabilities."""
    return (
        a.ndim >= 2
        and a.shape[-1] > 1
        and a.dtype.kind == "f"
        and bool(np.all(a >= 0))
        and bool(np.allclose(a.sum(axis=-1), 1.0, atol=1e-3))
    )


def agreeing_rows(
    answered: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], label_output: str | None
) -> np.ndarray | None:
    """Per row (first dimension), whether ``other`` answers as ``answered`` does; None when the
    two answers do not even have the same outputs and shapes."""
    names = [label_output] if label_output is not None and label_output in answered else list(answered)
    rows: np.ndarray | None = None
    for name in names:
        a, b = answered[name], other.get(name)
        if b is None or a.shape != b.shape:
            return None
        same = _same_rows(a, b, labels=name == label_output)
        rows = same if rows is None else rows & same
    return rows


def _same_rows(a: np.ndarray, b: np.ndarray, *, labels: bool) -> np.ndarray:
    if a.ndim == 0:
        return np.array([bool(np.array_equal(a, b))])
    if a.dtype.kind not in "fc":
        return _per_row(a == b)
    if (labels or is_probabilities(a)) and a.ndim >= 2 and a.shape[-1] > 1:
        return _per_row(np.argmax(a, axis=-1) == np.argmax(b, axis=-1))
    scale = max(1.0, float(np.max(np.abs(a)))) if a.size else 1.0
    return _per_row(np.isclose(a, b, rtol=RTOL, atol=ATOL * scale, equal_nan=True))


def _per_row(same: np.ndarray) -> np.ndarray:
    """Per row: every element of the row agrees."""
    if same.ndim > 1:
        return np.asarray(same.reshape(same.shape[0], -1).all(axis=1))
    return np.asarray(same)


def predicted_labels(outputs: Mapping[str, np.ndarray], label_output: str | None) -> np.ndarray | None:
    """The label each row gets (see the module docstring); None for a model that predicts none."""
    for array in outputs.values():
        if array.dtype.kind in "iu" and (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
            return array.reshape(-1).astype(np.int64)
    scores = outputs.get(label_output) if label_output else None
    if scores is None or scores.ndim != 2:
        scores = probabilities(outputs, label_output)
    return None if scores is None else np.argmax(scores, axis=1)


def probabilities(outputs: Mapping[str, np.ndarray], label_output: str | None) -> np.ndarray | None:
    labelled = outputs.get(label_output) if label_output else None
    if labelled is not None and labelled.ndim == 2 and is_probabilities(labelled):
        return labelled
    return next((a for a in outputs.values() if a.ndim == 2 and is_probabilities(a)), None)


def label_indices(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """``labels`` as class indices: integers as they are, names through ``class_names``."""
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64)
    if labels.dtype.kind in "US":
        if not class_names:
            raise InvalidInput("labels are names, but the package has no class names; give class indices")
        index = {name: i for i, name in enumerate(class_names)}
        unknown = sorted({str(label) for label in labels if str(label) not in index})
        if unknown:
            shown = list(class_names)[:20]
            raise InvalidInput(f"unknown class names in the labels: {unknown[:5]}; classes: {shown}")
        return np.array([index[str(label)] for label in labels], np.int64)
    if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    raise InvalidInput(f"labels must be class indices (integers) or class names, not {labels.dtype}")


def label_metrics(
    outputs: Mapping[str, np.ndarray],
    label_output: str | None,
    class_names: Sequence[str],
    labels: np.ndarray | None,
) -> tuple[dict[str, float], dict[str, str]]:
    """``accuracy`` and ``logloss`` of ``outputs`` against ``labels``; and why one is missing."""
    if labels is None:
        why = "no labels were given (--labels)"
        return {}, {"accuracy": why, "logloss": why}
    metrics: dict[str, float] = {}
    missing: dict[str, str] = {}
    truth = label_indices(labels, class_names)
    predicted = predicted_labels(outputs, label_output)
    if predicted is None:
        missing["accuracy"] = "the model predicts no label (no integer or probability output)"
    else:
        metrics["accuracy"] = float(np.mean(predicted == truth))
    scores = probabilities(outputs, label_output)
    if scores is None:
        missing["logloss"] = "the model has no probability output"
    elif truth.min() < 0 or truth.max() >= scores.shape[1]:
        missing["logloss"] = f"labels must be class indices below {scores.shape[1]} for logloss"
    else:
        chosen = scores[np.arange(truth.shape[0]), truth]
        metrics["logloss"] = float(-np.mean(np.log(np.clip(chosen, _PROBABILITY_FLOOR, 1.0))))
    return metrics, missing
