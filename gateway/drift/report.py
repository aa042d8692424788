"""A version's drift report: each feature's PSI and KS against the reference, most drifted first."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

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


def _shares(sketch: Any, edges: np.ndarray) -> list[float]:
    cdf = np.asarray(sketch.get_cdf(edges.tolist()))[:-1]
    return [round(float(share), 4) for share in np.diff(np.concatenate([[0.0], cdf, [1.0]]))]


def _feature(profile: FeatureProfile, live: Any, side: Literal["input", "output"]) -> FeatureDrift | None:
    if profile.kll is None or live.is_empty():
        return None
    reference = scores.load_sketch(profile.kll)
    psi, ks = scores.psi(reference, live), scores.ks(reference, live)
    edges = np.unique(np.asarray(reference.get_quantiles(np.linspace(0, 1, scores.BINS + 1)[1:-1].tolist())))
    return FeatureDrift(
        name=profile.name,
        side=side,
        psi=round(psi, 6),
        ks=round(ks, 6),
        drifted=scores.drifted(psi, ks),
        reference_shares=_shares(reference, edges),
        live_shares=_shares(live, edges),
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
    classes_js = None
    if reference.classes and live.classes:
        total = sum(live.classes.values())
        classes_js = scores.js_distance(reference.classes, {k: v / total for k, v in live.classes.items()})
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
