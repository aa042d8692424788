"""``build``: real models in, deterministic checked packages out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io

from core.errors import ConversionError, InvalidInput
from examples.digits import Digits
from modelpkg import build, read_package, verify_samples
from tests.converters import support
from tests.converters.test_onnx_model import ROWS, affine
from tests.modelpkg.zips import FIXED_TIME, entries


@pytest.fixture(scope="module")
def digits() -> Digits:
    return support.digits()


@pytest.fixture(scope="module")
def pipeline() -> Any:
    return support.sklearn_pipeline()


def _build_twice(model: Any, rows: np.ndarray, tmp_path: Path, **options: Any) -> tuple[bytes, bytes]:
    first, second = tmp_path / "first.pkg", tmp_path / "second.pkg"
    for path in (first, second):
        build(model, path, name="twice", samples=rows, created_at=FIXED_TIME, code_dir=None, **options)
    return first.read_bytes(), second.read_bytes()


def test_packaging_a_pipeline_twice_is_byte_identical(pipeline: Any, digits: Digits, tmp_path: Path) -> None:
    first, second = _build_twice(pipeline, digits.x_test, tmp_path, metrics={"accuracy": 0.97})
    assert first == second


def test_packaging_a_keras_model_twice_is_byte_identical(digits: Digits, tmp_path: Path) -> None:
    first, second = _build_twice(support.keras_model(), digits.x_test, tmp_path)
    assert first == second
    assert read_package(first).manifest.parity.max_abs_error <= 1e-5


def test_a_built_package_reads_back_with_what_was_put_in(affine_package: Path) -> None:
    package = read_package(affine_package)
    manifest = package.manifest
    assert (manifest.name, manifest.version, manifest.framework.name) == ("affine", "1", "onnx")
    assert [(s.name, s.datatype, s.shape) for s in manifest.signature.inputs] == [("x", "FP32", [-1, 4])]
    assert [(s.name, s.datatype, s.shape) for s in manifest.signature.outputs] == [("y", "FP32", [-1, 3])]
    assert package.samples.rows == len(ROWS)
    assert verify_samples(package).max_abs_error == manifest.parity.max_abs_error
    assert package.digest == __import__("hashlib").sha256(affine_package.read_bytes()).hexdigest()


def test_created_at_comes_from_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    built = build(affine(), tmp_path / "a.pkg", name="a", samples=ROWS, code_dir=None)
    assert built.manifest.provenance.created_at.isoformat() == "2023-11-14T22:13:20+00:00"


def test_packaging_unchanged_files_again_gives_the_same_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    model, samples = tmp_path / "affine.onnx", tmp_path / "rows.npy"
    model.write_bytes(affine().SerializeToString())
    np.save(samples, np.asarray(ROWS, np.float32))
    os.utime(model, (1_700_000_000, 1_700_000_000))
    os.utime(samples, (1_700_000_100, 1_700_000_100))  # the newest input
    first = build(model, tmp_path / "first.pkg", name="a", samples=samples, code_dir=None)
    second = build(model, tmp_path / "second.pkg", name="a", samples=samples, code_dir=None)
    assert first.manifest.provenance.created_at.isoformat() == "2023-11-14T22:15:00+00:00"
    assert first.digest == second.digest
    assert (tmp_path / "first.pkg").read_bytes() == (tmp_path / "second.pkg").read_bytes()


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


@pytest.mark.e2e
def test_provenance_records_data_hashes_git_commit_and_dirty_state(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text("print('train')\n")
    data = tmp_path / "train.csv"
    data.write_bytes(b"a,b\n1,2\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "train.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "train")
    clean = build(affine(), tmp_path / "clean.pkg", name="a", samples=ROWS, data_files=[data], code_dir=repo)
    (repo / "train.py").write_text("print('changed')\n")
    dirty = build(affine(), tmp_path / "dirty.pkg", name="a", samples=ROWS, code_dir=repo, parent=clean.path)
    source = clean.manifest.provenance
    assert source.code_commit is not None
    assert len(source.code_commit) == 40
    assert source.code_dirty is False
    assert [(item.path, item.sha256, item.size) for item in source.data] == [
        (str(data), "492d5ea496056f1a6a6592241032fab764c321596317930b4fa0e1e8bc3b7470", 8)
    ]
    assert dirty.manifest.provenance.code_dirty is True
    assert dirty.manifest.provenance.parent_digest == clean.digest


def test_parity_beyond_tolerance_fails_showing_the_worst_element(
    pipeline: Any, digits: Digits, tmp_path: Path
) -> None:
    with pytest.raises(
        ConversionError, match=r"parity failed: output 'probabilities'.* worst at \[\d+, \d+\]"
    ):
        build(pipeline, tmp_path / "p.pkg", name="p", samples=digits.x_test, tolerance=0.0, code_dir=None)
    assert not (tmp_path / "p.pkg").exists()


def test_unsupported_layers_fail_with_the_converters_reason(digits: Digits, tmp_path: Path) -> None:
    from sklearn.semi_supervised import LabelSpreading

    model = LabelSpreading().fit(digits.x_train[:100], digits.y_train[:100])
    with pytest.raises(ConversionError, match="skl2onnx cannot convert LabelSpreading"):
        build(model, tmp_path / "u.pkg", name="u", samples=digits.x_test, code_dir=None)


def test_source_files_are_kept_under_source(pipeline: Any, digits: Digits, tmp_path: Path) -> None:
    model = tmp_path / "digits.skops"
    skops.io.dump(pipeline, model)
    built = build(
        model, tmp_path / "s.pkg", name="s", samples=digits.x_test, include_source=True, code_dir=None
    )
    assert entries(built.path)["source/digits.skops"] == model.read_bytes()
    assert "source/digits.skops" in read_package(built.path).manifest.files


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"name": "no spaces"}, "name: String should match pattern"),
        ({"version": "../1"}, "version: String should match pattern"),
        ({"labels": ["a", "b"]}, "2 labels for output 'y' whose last dimension is 3"),
        ({"output_names": ["a", "b"]}, "the model has 1 outputs"),
        ({"input_names": ["bad name"]}, "input name 'bad name' must start with a letter"),
        ({"samples": {"x": ROWS, "z": ROWS}}, "samples are named"),
        ({"samples": ROWS.astype(str)}, "samples for input 'x' are <U"),
        ({"parent": "not-a-digest"}, "neither a sha256 digest nor a package file"),
        ({"framework": "torch"}, "unknown framework 'torch'"),
        ({"metrics": {"loss": float("nan")}}, "metrics.loss"),
        ({"tolerance": -1.0}, "tolerance must be a non-negative number"),
    ],
)
def test_bad_arguments_are_invalid_input(tmp_path: Path, options: dict[str, Any], problem: str) -> None:
    arguments: dict[str, Any] = {"name": "a", "samples": ROWS, "code_dir": None} | options
    with pytest.raises(InvalidInput, match=problem):
        build(affine(), tmp_path / "a.pkg", **arguments)


def test_importing_the_reader_loads_neither_tensorflow_nor_sklearn(affine_package: Path) -> None:
    heavy = ("tensorflow", "keras", "tf2onnx", "sklearn", "skl2onnx")
    code = (
        "import sys; from modelpkg import read_package, verify_samples; "
        f"verify_samples(read_package({str(affine_package)!r})); "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
