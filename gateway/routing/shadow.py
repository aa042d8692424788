"""Shadow comparisons: does the candidate's answer agree with the one returned, and how fast was it?

Agreement means what a user of the model would call the same answer (``core.answers``): the
same label for classifiers, equal integers or strings, floats equal within a tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel

from core.answers import agreeing_rows

_LATENCIES_KEPT = 1000


def answers_agree(
    answered: Mapping[str, np.ndarray], copied: Mapping[str, np.ndarray], label_output: str | None
) -> bool:
    """Whether the copy's answer is the same answer, in every row (``core.answers``)."""
    agreeing = agreeing_rows(answered, copied, label_output)
    return agreeing is not None and bool(np.all(agreeing))


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
