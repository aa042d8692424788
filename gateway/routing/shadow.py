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
    if label_output is not None and label_output in answered:
        return label_output in copied and _same_labels(answered[label_output], copied[label_output])
    return all(name in copied and _same(array, copied[name]) for name, array in answered.items())


def _same_labels(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.ndim == 0 or a.shape[-1] == 1:
        return bool(np.array_equal(a, b))
    return bool(np.array_equal(np.argmax(a, axis=-1), np.argmax(b, axis=-1)))


def _is_probabilities(a: np.ndarray) -> bool:
    return (
        a.ndim >= 2
        and a.shape[-1] > 1
        and bool(np.all(a >= 0))
        and bool(np.allclose(a.sum(axis=-1), 1.0, atol=1e-3))
    )


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind not in "fc":
        return bool(np.array_equal(a, b))
    if _is_probabilities(a):
        return _same_labels(a, b)
    scale = max(1.0, float(np.max(np.abs(a)))) if a.size else 1.0
    return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL * scale, equal_nan=True))


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
