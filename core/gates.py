"""Release gates: conditions on a version's evaluation, such as ``accuracy>=0.95``.

A gate names a metric of :data:`METRICS`, a comparison and a finite threshold. The CLI parses
gates to refuse a typo before uploading anything; the gateway parses them again (it trusts no
client) and judges an evaluation with :func:`judge`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from core.errors import InvalidInput

METRICS = {
    "accuracy": "share of rows whose predicted label is the given label (needs labels)",
    "logloss": "mean negative log-probability of the given label (needs labels and probabilities)",
    "agreement": "share of rows where the version answers as the live version does",
    "p50_ms": "median latency of 1-row requests through the gateway's data plane",
    "p99_ms": "99th percentile latency of 1-row requests through the gateway's data plane",
    "rows_per_s": "rows per second in requests of 32 rows through the gateway's data plane",
}
"""Every metric a gate may name, with what it measures."""

_OPERATORS = (">=", "<=", ">", "<")
_GATE = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")
MAX_GATES = 16


@dataclass(frozen=True)
class Gate:
    metric: str
    operator: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.operator}{self.threshold:g}"

    def passes(self, value: float) -> bool:
        if self.operator == ">=":
            return value >= self.threshold
        if self.operator == "<=":
            return value <= self.threshold
        if self.operator == ">":
            return value > self.threshold
        return value < self.threshold


def parse_gate(text: str) -> Gate:
    """``accuracy>=0.95`` as a Gate; InvalidInput saying what a gate looks like otherwise."""
    match = _GATE.match(text)
    example = "a gate is METRIC OP NUMBER, e.g. 'accuracy>=0.95' or 'p99_ms<=20'"
    if match is None:
        raise InvalidInput(f"cannot read gate {text!r}: {example} (OP: {', '.join(_OPERATORS)})")
    metric, operator, number = match.groups()
    if metric not in METRICS:
        raise InvalidInput(f"gate {text!r} names an unknown metric {metric!r}; metrics: {', '.join(METRICS)}")
    try:
        threshold = float(number)
    except ValueError:
        raise InvalidInput(f"gate {text!r}: {number!r} is not a number; {example}") from None
    if not math.isfinite(threshold):
        raise InvalidInput(f"gate {text!r}: the threshold must be a finite number")
    return Gate(metric, operator, threshold)


def parse_gates(texts: list[str]) -> list[Gate]:
    if len(texts) > MAX_GATES:
        raise InvalidInput(f"at most {MAX_GATES} gates, got {len(texts)}")
    return [parse_gate(text) for text in texts]


@dataclass(frozen=True)
class Verdict:
    gate: str
    value: float | None
    passed: bool
    reason: str


def judge(
    gates: list[Gate], metrics: Mapping[str, float | None], missing: Mapping[str, str]
) -> list[Verdict]:
    """Each gate against ``metrics``; a metric that could not be measured fails its gate, with the
    reason from ``missing`` (e.g. "no labels were given")."""
    verdicts = []
    for gate in gates:
        value = metrics.get(gate.metric)
        if value is None:
            why = missing.get(gate.metric, "it was not measured")
            verdicts.append(Verdict(str(gate), None, False, f"{gate.metric} is unknown: {why}"))
            continue
        passed = gate.passes(value)
        relation = "meets" if passed else "fails"
        verdicts.append(Verdict(str(gate), value, passed, f"{gate.metric} = {value:.4g} {relation} {gate}"))
    return verdicts
