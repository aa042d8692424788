"""TensorFlow SavedModel directories -> ONNX via tf2onnx.

TensorFlow and tf2onnx are imported inside the functions: importing this module must stay
cheap and must not pull TensorFlow into the serving side.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np
import onnx

from converters.base import DEFAULT_OPSET, Converted, Predict, check_converted, public_name, unsupported
from converters.rename import canonicalize
from core.errors import ConversionError, InvalidInput

SERVING_SIGNATURE = "serving_default"
SERVING_TAG = "serve"


def import_tensorflow() -> ModuleType:
    """TensorFlow, imported quietly and with reproducible CPU arithmetic.

    oneDNN's optimisations reorder float sums by thread count, so the reference outputs
    stored in samples.npz (hence the package bytes) could vary from run to run; turning them
    off also silences the notice TensorFlow prints about them. No effect if the caller
    imported TensorFlow already.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    return cast(ModuleType, tf)


@dataclass(frozen=True)
class SavedModelOnnx:
    """The ONNX form of one SavedModel signature and the loaded signature itself."""

    model: onnx.ModelProto
    function: Any
    keepalive: Any


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def convert_savedmodel(
    path: Path, *, opset: int = DEFAULT_OPSET, signature: str = SERVING_SIGNATURE, tag: str = SERVING_TAG
) -> Converted:
    """Convert one signature of a SavedModel; the original runs through that same signature."""
    if not is_saved_model(path):
        raise InvalidInput(f"{path} is not a SavedModel directory (no saved_model.pb)")
    tf = import_tensorflow()
    import tf2onnx

    converted = saved_model_to_onnx(path, opset=opset, signature=signature, tag=tag)
    names = [value.name for value in converted.model.graph.input]
    outputs = [value.name for value in converted.model.graph.output]
    return Converted(
        model=converted.model,
        predict=_signature_predict(tf, converted),
        framework="savedmodel",
        framework_version=tf.__version__,
        converter=f"tf2onnx {tf2onnx.__version__}",
        input_names=tuple(public_name(name, f"input_{i}") for i, name in enumerate(names)),
        output_names=tuple(public_name(name, f"output_{i}") for i, name in enumerate(outputs)),
        source=path,
    )


def _signature_predict(tf: ModuleType, converted: SavedModelOnnx) -> Predict:
    def predict(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        _ = converted.keepalive  # the signature's variables live as long as the loaded object
        results = converted.function(**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: np.asarray(tensor.numpy()) for name, tensor in results.items()}

    return predict


def saved_model_to_onnx(path: Path, *, opset: int, signature: str, tag: str) -> SavedModelOnnx:
    """tf2onnx's own ``--saved-model`` route: load, freeze, convert, name tensors after the signature."""
    tf = import_tensorflow()
    from tf2onnx import tf_loader
    from tf2onnx.convert import _convert_common

    with _tf2onnx_errors() as errors:
        try:
            graph_def, inputs, outputs, function, imported, tables, renames = tf_loader.from_saved_model(
                str(path),
                None,
                None,
                tag,
                [signature],
                None,
                False,
                return_concrete_func=True,
                return_initialized_tables=True,
                return_tensors_to_rename=True,
            )
            with tf.device("/cpu:0"):
                model, _ = _convert_common(
                    graph_def,
                    name="model",
                    opset=opset,
                    input_names=inputs,
                    output_names=outputs,
                    tensors_to_rename=renames,
                    initialized_tables=tables,
                    continue_on_error=False,
                )
        except Exception as exc:  # tf2onnx and TensorFlow raise many unrelated types
            raise _unsupported_ops(errors, opset) or unsupported(_WHAT, exc) from None
    error = _unsupported_ops(errors, opset)
    if error is not None:
        raise error
    canonicalize(model)
    check_converted(model, "tf2onnx")
    return SavedModelOnnx(model, function, imported)


_WHAT = "tf2onnx cannot convert the model"
_UNSUPPORTED = re.compile(r"Tensorflow op \[(?P<node>.+): (?P<op>[^\]]+)\] is not supported")


def _unsupported_ops(errors: list[str], opset: int) -> ConversionError | None:
    """tf2onnx logs unsupported ops instead of raising; name them all in one error."""
    found = [match for match in map(_UNSUPPORTED.search, errors) if match]
    if found:
        ops = ", ".join(sorted({f"{m['op']} (node {m['node']})" for m in found}))
        return ConversionError(f"{_WHAT}: TensorFlow op(s) not supported at opset {opset}: {ops}")
    return None


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


@contextmanager
def _tf2onnx_errors() -> Iterator[list[str]]:
    """Collect tf2onnx's ERROR records (it logs unsupported ops instead of raising) and mute it."""
    logger = logging.getLogger("tf2onnx")
    sink: list[str] = []
    handler = _Collect(sink)
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.ERROR)
    try:
        yield sink
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved
