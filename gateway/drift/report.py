"""A version's drift report: each feature's PSI and KS against the reference, most drifted first."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from gateway.drift import scores
from gateway.drift.live import WindowProfile
from modelpkg.reference import FeatureProfile, ReferenceProfile


class FeatureDrift(BaseModel):
    name: str
    side: Literal["input", "output"]
    psi: float
    ks: float
    drifted: bool
    reference_shares: list[float]
    """The share of reference values in each bin cut at the reference's deciles."""
    live_shares: list[float]
    """The share of live values in the same bins."""
    edges: list[float] = Field(default_factory=list)
    """Where the bins are cut, ascending (one fewer than the bins): bin ``i`` holds values from
    ``edges[i-1]`` to ``edges[i]``; the first is open below and the last open above."""


class DriftReport(BaseModel):
    """How far one version's live traffic in one window moved from its reference profile."""

    model: str
    version: str
    window: str
    status: Literal["ok", "drift", "no reference", "no traffic"]
    rows: int
    """Live rows sketched in the window (sampled requests' rows)."""
    reference_rows: int | None
    reference_source: str | None
    score: float | None
    """The mean PSI of the features."""
    drifted_share: float | None
    """The share of features whose PSI or KS crossed its threshold."""
    classes_js: float | None
    """Jensen-Shannon distance between reference and live predicted-class frequencies."""
    features: list[FeatureDrift]
    windows: list[str] = Field(default_factory=list)
    """The gateway's drift windows, any of which ``window`` may name."""


def _shares(sketch: Any, edges: np.ndarray) -> list[float]:
    cdf = np.asarray(sketch.get_cdf(edges.tolist()))[:-1]
    return [round(float(share), 4) for share in np.diff(np.concatenate([[0.0], cdf, [1.0]]))]


def _feature(profile: FeatureProfile, live: Any, side: Literal["input", "output"]) -> FeatureDrift | None:
    if profile.kll is None or live.is_empty():
        return None
    return _compared(profile.name, scores.load_sketch(profile.kll), live, side)


def _compared(name: str, reference: Any, live: Any, side: Literal["input", "output"]) -> FeatureDrift:
    psi, ks = scores.psi(reference, live), scores.ks(reference, live)
    edges = np.unique(np.asarray(reference.get_quantiles(np.linspace(0, 1, scores.BINS + 1)[1:-1].tolist())))
    return FeatureDrift(
        name=name,
        side=side,
        psi=round(psi, 6),
        ks=round(ks, 6),
        drifted=scores.drifted(psi, ks),
        reference_shares=_shares(reference, edges),
        live_shares=_shares(live, edges),
        edges=[round(float(edge), 6) for edge in edges],
    )


class ArmsDrift(BaseModel):
    """How far a rollout's candidate's live traffic is from the stable version's, in one window."""

    stable: str
    candidate: str
    window: str
    status: Literal["ok", "drift", "no traffic"]
    stable_rows: int
    candidate_rows: int
    drifted_share: float | None
    classes_js: float | None
    features: list[FeatureDrift]
    """The stable version's values are the reference; most drifted first, at most ``ARMS_SHOWN``."""


ARMS_SHOWN = 5


def _classes_js(reference: dict[str, float], live: Counter[str]) -> float | None:
    if not reference or not live:
        return None
    total = sum(live.values())
    return scores.js_distance(reference, {name: count / total for name, count in live.items()})


def arms_drift(
    stable: str, candidate: str, window: str, first: WindowProfile, second: WindowProfile
) -> ArmsDrift:
    """Features both versions have, by name: the candidate's against the stable's."""
    answer = ArmsDrift(
        stable=stable,
        candidate=candidate,
        window=window,
        status="no traffic",
        stable_rows=first.rows,
        candidate_rows=second.rows,
        drifted_share=None,
        classes_js=None,
        features=[],
    )
    if first.rows == 0 or second.rows == 0:
        return answer
    features: list[FeatureDrift] = []
    for side, names, other_names, sketch_of, other_sketch_of in (
        ("input", first.input_names, second.input_names, first.input_sketch, second.input_sketch),
        ("output", first.output_names, second.output_names, first.output_sketch, second.output_sketch),
    ):
        for index, name in enumerate(names):
            if name not in other_names:
                continue
            reference, live = sketch_of(index), other_sketch_of(other_names.index(name))
            if not reference.is_empty() and not live.is_empty():
                features.append(_compared(name, reference, live, side))  # type: ignore[arg-type]
    features.sort(key=lambda f: (f.psi, f.ks), reverse=True)
    total = sum(first.classes.values())
    share = sum(f.drifted for f in features) / len(features) if features else None
    return answer.model_copy(
        update={
            "status": "drift" if share else "ok",
            "drifted_share": share,
            "classes_js": _classes_js({k: v / total for k, v in first.classes.items()}, second.classes)
            if total
            else None,
            "features": features[:ARMS_SHOWN],
        }
    )


def drift_report(
    model: str, version: str, window: str, reference: ReferenceProfile | None, live: WindowProfile | None
) -> DriftReport:
    rows = live.rows if live is not None else 0
    report = DriftReport(
        model=model,
        version=version,
        window=window,
        status="no reference",
        rows=rows,
        reference_rows=reference.rows if reference is not None else None,
        reference_source=reference.source if reference is not None else None,
        score=None,
        drifted_share=None,
        classes_js=None,
        features=[],
    )
    if reference is None:
        return report  # a package made before profiles: never an error
    if live is None or rows == 0:
        return report.model_copy(update={"status": "no traffic"})
    features = [
        drift
        for index, profile in enumerate(reference.inputs)
        if (drift := _feature(profile, live.input_sketch(index), "input")) is not None
    ] + [
        drift
        for index, profile in enumerate(reference.outputs)
        if (drift := _feature(profile, live.output_sketch(index), "output")) is not None
    ]
    features.sort(key=lambda f: (f.psi, f.ks), reverse=True)
    classes_js = _classes_js(reference.classes, live.classes) if reference.classes else None
    share = sum(f.drifted for f in features) / len(features) if features else None
    return report.model_copy(
        update={
            "status": "drift" if share else "ok",
            "score": float(np.mean([f.psi for f in features])) if features else None,
            "drifted_share": share,
            "classes_js": classes_js,
            "features": features,
        }
    )
