"""Quantised and optimised packages: smaller, on integer kernels, parity checked, the cost recorded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest

from core.errors import InvalidInput
from examples.onnx_models import mlp
from modelpkg import build, read_package
from modelpkg.optimization import QUANTIZED_TOLERANCE, OptimizationRequest
from modelpkg.verify import verify_samples
from tests.modelpkg.zips import FIXED_TIME

SIZES = [256, 512, 10]
CLASSES = {"labels": [f"c{i}" for i in range(10)], "labels_output": "y"}


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((300, SIZES[0])).astype(np.float32)


def package(folder: Path, name: str, rows: np.ndarray, request: OptimizationRequest | None) -> Path:
    target = folder / f"{name}.pkg"
    build(
        mlp(SIZES, seed=3),
        target,
        name="mlp",
        samples=rows[:16],
        created_at=FIXED_TIME,
        code_dir=None,
        optimization=request,
        **CLASSES,  # type: ignore[arg-type]
    )
    return target


def operators(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load_from_string(read_package(path).model).graph.node}


def test_dynamic_quantization_is_smaller_on_integer_kernels_and_records_its_cost(
    tmp_path: Path, rows: np.ndarray
) -> None:
    labels = np.random.default_rng(2).integers(0, 10, 100)
    float_path = package(tmp_path, "float", rows, None)
    request = OptimizationRequest(
        quantize="dynamic", evaluation={"x": rows[100:200]}, evaluation_labels=labels
    )
    quantized = package(tmp_path, "dynamic", rows, request)

    before, after = read_package(float_path), read_package(quantized)
    assert len(after.model) < 0.35 * len(before.model)  # int8 weights: about a quarter
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= operators(quantized)
    record = after.manifest.optimization
    assert record is not None
    assert record.quantization == "dynamic"
    assert record.float_model_sha256 == hashlib.sha256(before.model).hexdigest()
    assert after.manifest.provenance.parent_digest == record.float_model_sha256
    assert (record.evaluated_on, record.evaluation_rows) == ("evaluation data", 100)
    assert 0.9 <= record.agreement_with_float <= 1.0
    assert record.accuracy is not None
    assert record.accuracy_float is not None
    assert record.accuracy_delta == pytest.approx(record.accuracy - record.accuracy_float)
    assert after.manifest.parity.tolerance == QUANTIZED_TOLERANCE
    assert after.manifest.parity.passed
    assert verify_samples(after).passed  # what the gateway checks on upload
    assert before.manifest.optimization is None


def test_static_quantization_calibrates_on_the_given_rows_or_the_samples(
    tmp_path: Path, rows: np.ndarray
) -> None:
    calibrated = package(
        tmp_path, "static", rows, OptimizationRequest(quantize="static", calibration={"x": rows[:128]})
    )
    record = read_package(calibrated).manifest.optimization
    assert record is not None
    assert (record.calibration_source, record.calibration_rows) == ("calibration", 128)
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators(calibrated)
    on_samples = read_package(
        package(tmp_path, "static-samples", rows, OptimizationRequest(quantize="static"))
    )
    assert on_samples.manifest.optimization is not None
    assert (
        on_samples.manifest.optimization.calibration_source,
        on_samples.manifest.optimization.calibration_rows,
    ) == (
        "samples",
        16,
    )


def test_optimised_packages_are_deterministic(tmp_path: Path, rows: np.ndarray) -> None:
    request = OptimizationRequest(quantize="dynamic", optimize=True)
    first = package(tmp_path, "first", rows, request)
    second = package(tmp_path, "second", rows, request)
    assert first.read_bytes() == second.read_bytes()
    record = read_package(first).manifest.optimization
    assert record is not None
    assert record.graph_optimized


def test_calibration_without_static_quantization_is_refused() -> None:
    with pytest.raises(InvalidInput, match="static quantization"):
        OptimizationRequest(quantize="dynamic", calibration={"x": np.zeros((1, 4), np.float32)})
