"""Shadow comparisons: does the candidate's answer agree with the one returned, and how fast was it?

Agreement means what a user of the model would call the same answer:

* a classifier's: the same label per row, the arg-max of the output its labels index (or of any
  output whose rows are probabilities: non-negative and summing to 1);
* integer, boolean and string outputs: equal;
* other (regression) outputs: equal within ``RTOL`` relative and ``ATOL`` of the answer's scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel

RTOL = 1e-3
ATOL = 1e-4
"""Absolute tolerance, times the largest magnitude of the returned answer (at least 1)."""
_LATENCIES_KEPT = 1000


def answers_agree(
    answered: Mapping[str, np.ndarray], copied: Mapping[str, np.ndarray], label_output: str | None
) -> bool:
    """Whether the copy's answer is the same answer, in every row."""
    agreeing = agreeing_rows(answered, copied, label_output)
    return agreeing is not None and bool(np.all(agreeing))


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
        return _flat(a == b)
    if (labels or _is_probabilities(a)) and a.ndim >= 2 and a.shape[-1] > 1:
        return _flat(np.argmax(a, axis=-1) == np.argmax(b, axis=-1))
    scale = max(1.0, float(np.max(np.abs(a)))) if a.size else 1.0
    return _flat(np.isclose(a, b, rtol=RTOL, atol=ATOL * scale, equal_nan=True))


def _flat(same: np.ndarray) -> np.ndarray:
    """Per row: every element of the row agrees."""
    if same.ndim > 1:
        return np.asarray(same.reshape(same.shape[0], -1).all(axis=1))
    return np.asarray(same)


def is_probabilities(a: np.ndarray) -> bool:
    """Rows of non-negative scores that sum to 1: a classifier's class probabilities."""
    return _is_probabilities(a)


def _is_probabilities(a: np.ndarray) -> bool:
    return (
        a.ndim >= 2
        and a.shape[-1] > 1
        and a.dtype.kind == "f"
        and bool(np.all(a >= 0))
        and bool(np.allclose(a.sum(axis=-1), 1.0, atol=1e-3))
    )


class ShadowStatus(BaseModel):
    """What the shadow candidate did with its copies (this gateway process, since the rollout)."""

    version: str
    copies: int
    agreed: int
    differed: int
    failed: int
    agreement_rate: float | None
    """Agreed over compared copies (failed ones are not compared)."""
    latency_delta_p50_ms: float | None
    """Median of (candidate's latency - the answering version's latency) per copy."""


@dataclass
class ShadowTally:
    version: str
    agreed: int = 0
    differed: int = 0
    failed: int = 0
    deltas_ms: list[float] = field(default_factory=list)

    def add(self, result: str, delta_ms: float | None) -> None:
        if result == "agree":
            self.agreed += 1
        elif result == "differ":
            self.differed += 1
        else:
            self.failed += 1
        if delta_ms is not None:
            self.deltas_ms.append(delta_ms)
            if len(self.deltas_ms) > 2 * _LATENCIES_KEPT:
                del self.deltas_ms[:_LATENCIES_KEPT]

    def status(self) -> ShadowStatus:
        compared = self.agreed + self.differed
        deltas = self.deltas_ms[-_LATENCIES_KEPT:]
        return ShadowStatus(
            version=self.version,
            copies=compared + self.failed,
            agreed=self.agreed,
            differed=self.differed,
            failed=self.failed,
            agreement_rate=self.agreed / compared if compared else None,
            latency_delta_p50_ms=float(np.median(deltas)) if deltas else None,
        )
