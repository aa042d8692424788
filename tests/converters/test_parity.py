"""Parity compares element by element and names the worst element."""

from __future__ import annotations

import numpy as np
import pytest

from converters.parity import compare, run_onnx
from core.errors import ConversionError, PackageError


def test_agreement_within_tolerance_passes_and_records_errors() -> None:
    expected = {"p": np.array([[0.5, 0.25], [100.0, 0.0]])}
    actual = {"p": np.array([[0.5000001, 0.25], [100.0001, 0.0]], dtype=np.float32)}
    report = compare(expected, actual, 1e-5)
    assert report.passed
    assert report.rows == 2
    assert report.max_abs_error == pytest.approx(1e-4, rel=0.1)  # large value: relative error counts
    assert report.max_rel_error == pytest.approx(1e-6, rel=0.1)


def test_disagreement_names_the_output_and_worst_element() -> None:
    expected = {"p": np.zeros((3, 4), dtype=np.float32)}
    actual = {"p": np.zeros((3, 4), dtype=np.float32)}
    actual["p"][2, 1] = 0.5
    actual["p"][0, 0] = 0.01
    report = compare(expected, actual, 1e-5)
    assert not report.passed
    assert report.outputs["p"].mismatches == 2
    message = report.failure_message()
    assert "output 'p'" in message
    assert "worst at [2, 1]" in message
    assert "ONNX 0.5 vs original 0.0" in message


def test_integer_outputs_must_be_equal() -> None:
    report = compare({"label": np.array([1, 2, 3])}, {"label": np.array([1, 2, 4])}, 1e-5)
    assert not report.passed
    assert "worst at [2]" in report.failure_message()


def test_text_outputs_compare_as_strings() -> None:
    expected = {"label": np.array(["cat", "dog"])}
    assert compare(expected, {"label": np.array(["cat", "dog"], dtype=object)}, 0.0).passed
    failed = compare(expected, {"label": np.array(["cat", "cow"], dtype=object)}, 0.0)
    assert "ONNX 'cow' vs original 'dog'" in failed.failure_message()


def test_nan_matches_only_nan() -> None:
    assert compare({"y": np.array([np.nan, 1.0])}, {"y": np.array([np.nan, 1.0])}, 0.0).passed
    report = compare({"y": np.array([np.nan, 1.0])}, {"y": np.array([0.0, 1.0])}, 0.5)
    assert not report.passed
    assert np.isfinite(report.max_abs_error)  # recorded as the largest float: JSON has no infinity


def test_shape_and_missing_outputs_are_reported() -> None:
    expected = {"a": np.zeros((2, 3)), "b": np.zeros(2)}
    report = compare(expected, {"a": np.zeros((2, 1))}, 1e-5)
    assert report.outputs["a"].problem == "shape (2, 1) from ONNX but (2, 3) from the original model"
    assert report.outputs["b"].problem == "the ONNX model does not produce it"


def test_onnxruntime_failures_become_the_requested_error() -> None:
    with pytest.raises(ConversionError, match="onnxruntime cannot run the model"):
        run_onnx(b"not onnx", {})
    with pytest.raises(PackageError, match="onnxruntime cannot run the model"):
        run_onnx(b"not onnx", {}, error=PackageError)
