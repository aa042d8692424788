"""Keras 3 models and SavedModels convert through tf2onnx and match TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.keras import convert_keras, import_keras
from converters.savedmodel import convert_savedmodel, import_tensorflow
from core.errors import ConversionError, InvalidInput
from tests.converters.support import parity


def test_keras_model_object_converts_within_1e5(keras_model: Any, samples: np.ndarray) -> None:
    converted = convert_keras(keras_model)
    report = parity(converted, samples)
    assert report.passed, report.failure_message()
    assert report.max_abs_error <= 1e-5
    assert converted.framework == "keras"
    assert converted.input_names == ("pixels",)
    assert converted.output_names == ("output",)


def test_keras_file_converts_and_keeps_the_file_as_source(
    keras_model: Any, samples: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "digits.keras"
    keras_model.save(path)
    converted = convert_keras(path)
    assert parity(converted, samples).max_abs_error <= 1e-5
    assert converted.source == path


def test_savedmodel_directory_converts_within_1e5(
    keras_model: Any, samples: np.ndarray, tmp_path: Path
) -> None:
    keras_model.export(str(tmp_path / "saved"), verbose=False)
    converted = convert_savedmodel(tmp_path / "saved")
    report = parity(converted, samples)
    assert report.passed, report.failure_message()
    assert report.max_abs_error <= 1e-5
    assert converted.framework == "savedmodel"


def test_keras_conversion_is_byte_identical(keras_model: Any) -> None:
    first = convert_keras(keras_model).model.SerializeToString(deterministic=True)
    second = convert_keras(keras_model).model.SerializeToString(deterministic=True)
    assert first == second


def test_keras_outputs_map_to_their_onnx_outputs(samples: np.ndarray) -> None:
    keras = import_keras()
    keras.utils.set_random_seed(1)
    left = keras.Input(shape=(64,), name="left")
    right = keras.Input(shape=(3,), name="right")
    joined = keras.layers.Concatenate()([left, right])
    model = keras.Model(
        [left, right],
        [keras.layers.Dense(5, name="wide")(joined), keras.layers.Dense(1, name="narrow")(joined)],
    )
    converted = convert_keras(model)
    extra = np.arange(48, dtype=np.float32).reshape(16, 3)
    report = parity(converted, samples, extra)
    assert report.passed, report.failure_message()
    # A swapped mapping would compare [16, 5] with [16, 1] and fail on shape.
    assert list(report.outputs) == ["output_0", "output_1"]
    assert converted.input_names == ("left", "right")


def test_unsupported_tensorflow_op_fails_with_the_converters_reason(tmp_path: Path) -> None:
    tf = import_tensorflow()

    def serve(x: Any) -> Any:
        return {"y": tf.math.igamma(x, x)}

    module = tf.Module()
    module.serve = tf.function(serve, input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    tf.saved_model.save(module, str(tmp_path / "gamma"), signatures={"serving_default": module.serve})
    with pytest.raises(ConversionError, match=r"TensorFlow op\(s\) not supported at opset 17: Igamma"):
        convert_savedmodel(tmp_path / "gamma")


def test_a_folder_without_saved_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a SavedModel directory"):
        convert_savedmodel(tmp_path)


def test_a_corrupt_keras_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip")
    with pytest.raises(ConversionError, match="cannot load a Keras model from"):
        convert_keras(path)
