"""The drift report's bins and windows: each feature carries its cut points, so a histogram can label
its bars, and the report names the windows a client may choose from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.drift.live import VersionSketches
from gateway.drift.monitor import DriftMonitor, StoredVersion
from gateway.drift.report import drift_report
from gateway.drift.windows import windows_of
from modelpkg import build, read_package
from tests.drift.test_scores_and_live import profile_and_answers


def test_each_feature_carries_ascending_edges_one_fewer_than_its_bins() -> None:
    rng = np.random.default_rng(2)
    train = rng.standard_normal((5_000, 4)).astype(np.float32)
    reference, answers = profile_and_answers(train)
    live = VersionSketches(reference, ["a", "b", "c"], "p")
    batch = rng.standard_normal((500, 4)).astype(np.float32) + 1.0
    live.ingest({"x": batch}, {"p": answers["p"][:500]})
    report = drift_report("m", "1", "5m", reference, live.window("5m"))
    inputs = [f for f in report.features if f.side == "input"]
    assert len(inputs) == 4
    for feature in inputs:
        assert len(feature.edges) == len(feature.reference_shares) - 1 == len(feature.live_shares) - 1
        assert feature.edges == sorted(feature.edges)
        # Cut at the reference's deciles: about a tenth of the reference in each bin, the median
        # of a standard normal in the middle.
        assert feature.reference_shares == pytest.approx([0.1] * 10, abs=0.02)
        assert feature.edges[4] == pytest.approx(0.0, abs=0.1)
        # Shifted up by one: the live values pile into the upper bins.
        assert sum(feature.live_shares[5:]) > 0.75


async def test_the_monitors_report_names_the_windows_a_client_may_ask_for(tmp_path: Path) -> None:
    from examples.onnx_models import mlp

    package = tmp_path / "tiny.pkg"
    reference = np.random.default_rng(3).standard_normal((500, 8)).astype(np.float32)
    build(
        mlp([8, 4], seed=1), package, name="tiny", samples=reference[:4], reference=reference, code_dir=None
    )
    manifest = read_package(package).manifest

    async def lookup(model: str, version: str) -> StoredVersion:
        return StoredVersion(manifest, package)

    monitor = DriftMonitor(lookup, 1.0, windows=windows_of(["5m", "2h"]))
    report = await monitor.report("tiny", "1", "2h")
    assert report.status == "no traffic"
    assert report.window == "2h"
    assert report.windows == ["5m", "2h"]
