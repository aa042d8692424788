"""Drift scores from sketches, live windows, and the report: a shifted feature is flagged first."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.drift import scores
from gateway.drift.live import VersionSketches
from gateway.drift.report import drift_report
from modelpkg.reference import ReferenceProfile, build_profile, feature_profile


def sketch_of(values: np.ndarray) -> object:
    profile = feature_profile("f", "x", values)
    assert profile.kll is not None
    return scores.load_sketch(profile.kll)


def live_sketch(values: np.ndarray) -> object:
    from datasketches import kll_floats_sketch  # type: ignore[import-untyped]

    sketch = kll_floats_sketch(200)
    for value in values:
        sketch.update(float(value))
    return sketch


def test_psi_and_ks_are_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = sketch_of(rng.standard_normal(20_000))
    same = live_sketch(rng.standard_normal(5_000))
    shifted = live_sketch(rng.standard_normal(5_000) + 3.0)
    assert scores.psi(reference, same) < 0.05
    assert scores.ks(reference, same) < 0.05
    assert scores.psi(reference, shifted) > 2.0
    assert scores.ks(reference, shifted) > 0.8
    assert not scores.drifted(scores.psi(reference, same), scores.ks(reference, same))


def test_js_distance_of_class_frequencies() -> None:
    assert scores.js_distance({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == pytest.approx(0.0)
    assert scores.js_distance({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)


def profile_and_answers(rows: np.ndarray) -> tuple[ReferenceProfile, dict[str, np.ndarray]]:
    scores_out = np.tile(np.array([[0.7, 0.2, 0.1]], np.float32), (rows.shape[0], 1))
    return build_profile({"x": rows}, {"p": scores_out}, "reference", "channel-mean", "p", ["a", "b", "c"]), {
        "p": scores_out
    }


def test_windows_keep_their_span_and_the_report_ranks_the_shifted_feature_first() -> None:
    rng = np.random.default_rng(1)
    train = rng.standard_normal((5_000, 4)).astype(np.float32)
    reference, answers = profile_and_answers(train)
    now = [1_000_000.0]
    live = VersionSketches(reference, ["a", "b", "c"], "p", clock=lambda: now[0])
    for _ in range(20):
        batch = rng.standard_normal((50, 4)).astype(np.float32)
        live.ingest({"x": batch}, {"p": answers["p"][:50]})
    calm = drift_report("m", "1", "5m", reference, live.window("5m"))
    assert calm.status == "ok"
    assert calm.rows == 1000
    assert calm.score is not None
    assert calm.score < 0.05
    now[0] += 600  # ten minutes on: the 5-minute window is empty, the hour still holds it
    assert live.window("5m").rows == 0
    assert live.window("1h").rows == 1000
    for _ in range(20):
        batch = rng.standard_normal((50, 4)).astype(np.float32)
        batch[:, 2] += 3.0
        live.ingest({"x": batch}, {"p": answers["p"][:50]})
    shifted = drift_report("m", "1", "5m", reference, live.window("5m"))
    assert shifted.status == "drift"
    assert shifted.features[0].name == "x[2]"
    assert shifted.features[0].drifted
    assert [f.drifted for f in shifted.features[1:]] == [False] * (len(shifted.features) - 1)
    assert shifted.classes_js == pytest.approx(0.0, abs=1e-6)
    assert sum(shifted.features[0].live_shares) == pytest.approx(1.0, abs=1e-3)


def test_no_reference_and_no_traffic_are_states_not_errors() -> None:
    assert drift_report("m", "1", "1h", None, None).status == "no reference"
    reference, _ = profile_and_answers(np.zeros((10, 2), np.float32))
    assert drift_report("m", "1", "1h", reference, None).status == "no traffic"
