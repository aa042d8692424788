"""scikit-learn estimators and pipelines convert through skl2onnx, without ZipMap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pytest
import skops.io
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelSpreading

from converters.sklearn import SKLEARN_TYPES, convert_sklearn, is_trusted
from core.errors import ConversionError, InvalidInput
from examples.digits import Digits
from tests.converters.support import parity


def test_pipeline_probabilities_match_as_an_fp32_tensor(pipeline: Any, samples: np.ndarray) -> None:
    converted = convert_sklearn(pipeline, samples)
    report = parity(converted, samples)
    assert report.passed, report.failure_message()
    assert report.outputs["probabilities"].max_abs_error <= 1e-5
    assert report.outputs["label"].mismatches == 0
    outputs = {value.name: value.type for value in converted.model.graph.output}
    assert outputs["probabilities"].tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert outputs["label"].tensor_type.elem_type == onnx.TensorProto.INT64
    assert "ZipMap" not in {node.op_type for node in converted.model.graph.node}


def test_classifier_labels_come_from_its_classes(pipeline: Any, samples: np.ndarray) -> None:
    converted = convert_sklearn(pipeline, samples)
    assert converted.labels == tuple(str(digit) for digit in range(10))
    assert converted.labels_output == "probabilities"
    assert converted.input_names == ("input",)


def test_regression_output_keeps_its_column_shape(digits: Digits, samples: np.ndarray) -> None:
    regressor = LinearRegression().fit(digits.x_train, digits.y_train.astype(np.float32))
    converted = convert_sklearn(regressor, samples)
    assert parity(converted, samples, tolerance=1e-4).passed
    assert converted.output_names == ("prediction",)


def test_sklearn_conversion_is_byte_identical(pipeline: Any, samples: np.ndarray) -> None:
    first = convert_sklearn(pipeline, samples).model.SerializeToString(deterministic=True)
    assert convert_sklearn(pipeline, samples).model.SerializeToString(deterministic=True) == first


def test_skops_file_loads_without_pickle(pipeline: Any, samples: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    skops.io.dump(pipeline, path)
    converted = convert_sklearn(path, samples)
    assert parity(converted, samples).passed
    assert converted.source == path


def test_pickle_is_refused_without_trust(pipeline: Any, samples: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(pipeline, path)
    with pytest.raises(InvalidInput, match="would run arbitrary code"):
        convert_sklearn(path, samples)


def test_pickle_loads_when_trusted(pipeline: Any, samples: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    joblib.dump(pipeline, path)
    assert parity(convert_sklearn(path, samples, trust_pickle=True), samples).passed


def test_unsupported_estimator_fails_with_the_converters_reason(digits: Digits, samples: np.ndarray) -> None:
    model = make_pipeline(StandardScaler(), LabelSpreading()).fit(digits.x_train[:200], digits.y_train[:200])
    with pytest.raises(
        ConversionError, match="skl2onnx cannot convert Pipeline: Unable to find a shape calculator"
    ):
        convert_sklearn(model, samples)


def test_non_estimators_are_refused(samples: np.ndarray) -> None:
    with pytest.raises(InvalidInput, match="expected a fitted scikit-learn estimator"):
        convert_sklearn(object(), samples)


@pytest.fixture
def forest_file(digits: Digits, tmp_path: Path) -> Path:
    forest = RandomForestClassifier(n_estimators=3, max_depth=4, random_state=0).fit(
        digits.x_train, digits.y_train
    )
    path = tmp_path / "forest.skops"
    skops.io.dump(forest, path)
    return path


def test_a_forest_refusal_lists_the_exact_flags_to_pass(forest_file: Path, samples: np.ndarray) -> None:
    with pytest.raises(InvalidInput) as refused:
        convert_sklearn(forest_file, samples)
    untrusted = skops.io.get_untrusted_types(file=forest_file)
    assert untrusted  # skops leaves scikit-learn's tree type out of its defaults
    for name in untrusted:
        assert f"--trust-type {name}" in refused.value.message
    assert "or --trust-sklearn-types" in refused.value.message


def test_trusting_sklearn_types_loads_a_forest(forest_file: Path, samples: np.ndarray) -> None:
    converted = convert_sklearn(forest_file, samples, trusted_types=[SKLEARN_TYPES])
    assert parity(converted, samples).passed


def test_a_package_pattern_trusts_only_that_package() -> None:
    assert is_trusted("sklearn.tree._tree.Tree", ["sklearn.*"])
    assert not is_trusted("sklearnx.evil.Type", ["sklearn.*"])
    assert not is_trusted("numpy.dtype", ["sklearn.*"])
    assert is_trusted("numpy.dtype", ["numpy.dtype"])
