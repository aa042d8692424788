"""The demo packages of the README: both digits models, with the documented signature."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.digits import LABELS, main
from modelpkg import read_package, verify_samples


def _signature(path: Path) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    signature = read_package(path).manifest.signature
    return (
        [(s.name, s.datatype, s.shape) for s in signature.inputs],
        [(s.name, s.datatype, s.shape) for s in signature.outputs],
    )


def test_demo_builds_both_packages(demo_packages: dict[str, Path]) -> None:
    assert sorted(demo_packages) == ["digits-keras", "digits-sklearn"]


def test_demo_sklearn_package_has_the_documented_signature(demo_packages: dict[str, Path]) -> None:
    assert _signature(demo_packages["digits-sklearn"]) == (
        [("pixels", "FP32", [-1, 64])],
        [("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 10])],
    )


def test_demo_keras_package_has_the_documented_signature(demo_packages: dict[str, Path]) -> None:
    assert _signature(demo_packages["digits-keras"]) == (
        [("pixels", "FP32", [-1, 64])],
        [("probabilities", "FP32", [-1, 10])],
    )


@pytest.mark.parametrize("name", ["digits-sklearn", "digits-keras"])
def test_demo_packages_are_labelled_accurate_and_reproduce(demo_packages: dict[str, Path], name: str) -> None:
    package = read_package(demo_packages[name])
    manifest = package.manifest
    assert manifest.labels is not None
    assert (manifest.labels.output, manifest.labels.names) == ("probabilities", LABELS)
    assert manifest.metrics["accuracy"] > 0.9
    assert manifest.parity.max_abs_error <= 1e-5
    assert verify_samples(package).passed


def test_demo_entry_point_needs_an_output_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: python -m examples.digits OUT_DIR" in capsys.readouterr().err
