"""How far live values moved from the reference: PSI and the KS statistic per feature, the
Jensen-Shannon distance between class frequencies, and a version's overall score.

Both sides are KLL sketches, so the scores are computed from their CDFs, never from raw rows:

* **PSI** (population stability index) over ``BINS`` bins cut at the reference's deciles:
  ``sum((live - ref) * ln(live / ref))`` of the bin shares, each share at least ``FLOOR``.
  Common reading: below 0.1 stable, 0.1-0.25 moving, above 0.25 shifted.
* **KS**: the largest gap between the two CDFs, over the reference's and the live sketch's
  quantile points.
* **JS distance** (base 2, in [0, 1]) between predicted-class frequencies.

A feature has drifted when its PSI exceeds ``PSI_DRIFT`` or its KS statistic ``KS_DRIFT``; a
version's score is the mean PSI of its features, with the share of drifted features beside it.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon

BINS = 10
FLOOR = 1e-4
PSI_DRIFT = 0.2
KS_DRIFT = 0.1


def load_sketch(encoded: str) -> Any:
    from datasketches import kll_floats_sketch  # type: ignore[import-untyped]  # no stubs

    return kll_floats_sketch.deserialize(base64.b64decode(encoded))


def _cdf(sketch: Any, points: np.ndarray) -> np.ndarray:
    return np.asarray(sketch.get_cdf(points.tolist()))[:-1]


def _edges(reference: Any) -> np.ndarray:
    cut = np.asarray(reference.get_quantiles(np.linspace(0.0, 1.0, BINS + 1)[1:-1].tolist()), np.float64)
    return np.unique(cut)


def psi(reference: Any, live: Any) -> float:
    edges = _edges(reference)
    if edges.size == 0:  # a constant reference: one bin, and whatever is not that value
        edges = np.array([reference.get_min_value()], np.float64)
    ref_cdf, live_cdf = _cdf(reference, edges), _cdf(live, edges)
    ref_share = np.diff(np.concatenate([[0.0], ref_cdf, [1.0]]))
    live_share = np.diff(np.concatenate([[0.0], live_cdf, [1.0]]))
    ref_share, live_share = np.maximum(ref_share, FLOOR), np.maximum(live_share, FLOOR)
    return float(np.sum((live_share - ref_share) * np.log(live_share / ref_share)))


def ks(reference: Any, live: Any) -> float:
    ranks = np.linspace(0.0, 1.0, 101).tolist()
    quantiles = [np.asarray(sketch.get_quantiles(ranks), np.float64) for sketch in (reference, live)]
    points = np.unique(np.concatenate(quantiles))
    return float(np.max(np.abs(_cdf(reference, points) - _cdf(live, points))))


def js_distance(reference: Mapping[str, float], live: Mapping[str, float]) -> float:
    classes = sorted(set(reference) | set(live))
    p = np.array([reference.get(c, 0.0) for c in classes])
    q = np.array([live.get(c, 0.0) for c in classes])
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    value = float(jensenshannon(p, q, base=2))
    return 0.0 if math.isnan(value) else value


def drifted(psi_value: float, ks_value: float) -> bool:
    return psi_value > PSI_DRIFT or ks_value > KS_DRIFT
