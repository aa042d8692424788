"""The reference profile a package carries: named features, KLL sketches, classes, determinism."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import onnx
import pytest
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]

from core.errors import PackageError
from examples.digits import LABELS, load_data, train_sklearn
from examples.onnx_models import mlp
from mdeploy.cli import main
from modelpkg import build, read_package
from modelpkg.reference import REFERENCE_ENTRY, features_of
from tests.modelpkg.zips import FIXED_TIME, rewritten


def digits_package(target: Path) -> Path:
    """The demo's scikit-learn digits model, its training rows as the reference."""
    data = load_data()
    build(
        train_sklearn(data),
        target,
        name="digits",
        samples=data.x_test[:8],
        input_names=["pixels"],
        output_names=["label", "probabilities"],
        labels=LABELS,
        labels_output="probabilities",
        created_at=FIXED_TIME,
        code_dir=None,
        reference=data.x_train,
    )
    return target


@pytest.fixture(scope="module")
def digits_with_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_package(tmp_path_factory.mktemp("reference") / "digits.pkg")


def test_the_profile_names_each_feature_and_sketches_its_distribution(digits_with_reference: Path) -> None:
    package = read_package(digits_with_reference)
    profile, summary = package.reference, package.manifest.reference
    assert profile is not None
    assert summary is not None
    train = load_data().x_train
    assert (profile.rows, profile.source, summary.rows) == (train.shape[0], "reference", train.shape[0])
    assert [f.name for f in profile.inputs[:3]] == ["pixels[0]", "pixels[1]", "pixels[2]"]
    assert len(profile.inputs) == summary.input_features == 64
    feature = profile.inputs[36]  # a pixel in the middle of the digit
    assert (feature.count, feature.missing) == (train.shape[0], 0)
    assert (feature.min, feature.max) == (float(train[:, 36].min()), float(train[:, 36].max()))
    assert feature.kll is not None
    sketch = kll_floats_sketch.deserialize(base64.b64decode(feature.kll))
    for rank in (0.1, 0.5, 0.9):
        assert sketch.get_quantile(rank) == pytest.approx(np.quantile(train[:, 36], rank), abs=1.0)
    assert profile.classes is not None
    assert set(profile.classes) == set(LABELS)
    assert sum(profile.classes.values()) == pytest.approx(1.0)
    names = [f.name for f in profile.outputs]
    assert "confidence" in names
    assert "label" in names
    label = next(f for f in profile.outputs if f.name == "label")
    assert label.frequent is not None
    assert len(label.frequent) == 10  # an integer output: its frequent values


def test_profiles_are_deterministic_and_their_digest_is_in_the_manifest(
    digits_with_reference: Path, tmp_path: Path
) -> None:
    again = digits_package(tmp_path / "again.pkg")
    manifest = read_package(digits_with_reference).manifest
    assert again.read_bytes() == digits_with_reference.read_bytes()
    assert manifest.reference is not None
    assert manifest.files[REFERENCE_ENTRY] == manifest.reference.sha256


def test_a_package_made_before_profiles_reads_without_one(
    digits_with_reference: Path, tmp_path: Path
) -> None:
    old = read_package(rewritten(digits_with_reference, tmp_path / "old.pkg", keep_reference=False))
    assert old.reference is None
    assert old.manifest.reference is None


def test_an_altered_profile_is_refused(digits_with_reference: Path, tmp_path: Path) -> None:
    altered = rewritten(digits_with_reference, tmp_path / "altered.pkg", keep_reference=True, profile=b"{}\n")
    with pytest.raises(PackageError, match=r"reference\.json"):
        read_package(altered)


def test_images_are_profiled_per_channel_or_as_one_mean() -> None:
    nchw = np.random.default_rng(0).random((5, 3, 8, 8)).astype(np.float32)
    per_channel = features_of("image", nchw, "channel-mean")
    assert list(per_channel) == ["image[c=0]", "image[c=1]", "image[c=2]"]
    np.testing.assert_allclose(per_channel["image[c=1]"], nchw[:, 1].mean(axis=(1, 2)), rtol=1e-6)
    nhwc = np.moveaxis(nchw, 1, 3)
    assert list(features_of("image", nhwc, "channel-mean")) == ["image[c=0]", "image[c=1]", "image[c=2]"]
    assert list(features_of("image", nchw, "mean")) == ["image"]
    assert list(features_of("score", np.zeros(5), "channel-mean")) == ["score"]


def test_the_cli_profiles_the_reference_or_warns_about_the_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
    onnx.save(mlp([16, 8, 3], seed=1), tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", rows[:8])
    np.save(tmp_path / "train.npy", rows)
    common = [
        "package",
        str(tmp_path / "mlp.onnx"),
        "--name",
        "m",
        "--samples",
        str(tmp_path / "x.npy"),
        "-q",
    ]
    assert main([*common, "-o", str(tmp_path / "weak.pkg")]) == 0
    assert "a weak reference" in capsys.readouterr().err
    assert main([*common, "--reference", str(tmp_path / "train.npy"), "-o", str(tmp_path / "m.pkg")]) == 0
    assert "weak reference" not in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "m.pkg")]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "200 rows; 16 input and 3 output features" in shown
    weak = read_package(tmp_path / "weak.pkg").manifest.reference
    assert weak is not None
    assert (weak.source, weak.rows) == ("samples", 8)
