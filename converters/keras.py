"""Keras 3 models (objects or ``.keras`` files) -> ONNX.

tf2onnx 1.17's ``from_keras`` fails on Keras 3, so the model is exported with
``model.export()`` to a SavedModel in a temporary folder and that SavedModel is converted.
The parity check runs the Keras model object itself, so it also covers the export.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np

from converters.base import DEFAULT_OPSET, Converted, Predict, load_failure, public_name, unsupported
from converters.savedmodel import SERVING_SIGNATURE, SERVING_TAG, import_tensorflow, saved_model_to_onnx
from core.errors import InvalidInput

# Names Keras invents for unnamed inputs; a signature deserves a plainer one.
_GENERATED = re.compile(r"^(keras_tensor|input_layer|input)(_\d+)?$")
_OUTPUT_INDEX = re.compile(r"^output_(\d+)$")


def import_keras() -> ModuleType:
    import_tensorflow()
    import keras

    return cast(ModuleType, keras)


def load_keras_file(path: Path) -> Any:
    """Load a ``.keras`` file in safe mode (no arbitrary lambdas deserialized)."""
    keras = import_keras()
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError, zip errors...
        raise load_failure("a Keras model", path, exc) from None


def convert_keras(model: object, *, opset: int = DEFAULT_OPSET) -> Converted:
    """Convert a Keras 3 model object, or a ``.keras`` file given as a path."""
    keras = import_keras()
    source = Path(model) if isinstance(model, str | Path) else None
    loaded = load_keras_file(source) if source is not None else model
    if not isinstance(loaded, keras.Model):
        raise InvalidInput(f"expected a Keras model, got {type(loaded).__name__}")
    if keras.backend.backend() != "tensorflow":
        raise InvalidInput(
            f"Keras models convert through TensorFlow; the Keras backend is {keras.backend.backend()}"
        )
    onnx_model = _export_and_convert(loaded, opset)
    import tf2onnx

    inputs = [value.name for value in onnx_model.graph.input]
    outputs = [value.name for value in onnx_model.graph.output]
    return Converted(
        model=onnx_model,
        predict=_keras_predict(keras, loaded, outputs),
        framework="keras",
        framework_version=keras.__version__,
        converter=f"tf2onnx {tf2onnx.__version__} (tensorflow {import_tensorflow().__version__})",
        input_names=_input_names(inputs),
        output_names=_output_names(outputs),
        source=source,
    )


def _export_and_convert(model: Any, opset: int) -> Any:
    with tempfile.TemporaryDirectory(prefix="mdeploy-keras-") as folder:
        exported = Path(folder) / "saved_model"
        try:
            model.export(str(exported), format="tf_saved_model", verbose=False)
        except Exception as exc:  # an unbuilt or unexportable model: Keras' reason is the message
            raise unsupported("Keras cannot export the model to a SavedModel", exc) from None
        return saved_model_to_onnx(exported, opset=opset, signature=SERVING_SIGNATURE, tag=SERVING_TAG).model


def _input_names(names: list[str]) -> tuple[str, ...]:
    if len(names) == 1 and _GENERATED.match(names[0]):
        return ("input",)
    return tuple(
        f"input_{i}" if _GENERATED.match(name) else public_name(name, f"input_{i}")
        for i, name in enumerate(names)
    )


def _output_names(names: list[str]) -> tuple[str, ...]:
    if len(names) == 1:
        return ("output",)
    return tuple(public_name(name, f"output_{i}") for i, name in enumerate(names))


def _keras_predict(keras: ModuleType, model: Any, onnx_outputs: list[str]) -> Predict:
    """Run the Keras model; its flattened outputs ``i`` match the export's ``output_i``."""
    input_names = [tensor.name for tensor in model.inputs]
    positions = _output_positions(onnx_outputs)

    def predict(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ordered = (
            [inputs[name] for name in input_names]
            if set(input_names) == set(inputs)
            else list(inputs.values())
        )
        result = model(ordered[0] if len(ordered) == 1 else ordered, training=False)
        flat = keras.tree.flatten(result)
        return {name: np.asarray(keras.ops.convert_to_numpy(flat[positions[name]])) for name in onnx_outputs}

    return predict


def _output_positions(onnx_outputs: list[str]) -> dict[str, int]:
    matches = [_OUTPUT_INDEX.match(name) for name in onnx_outputs]
    if all(matches):
        return {name: int(match[1]) for name, match in zip(onnx_outputs, matches, strict=True) if match}
    return {name: index for index, name in enumerate(onnx_outputs)}
