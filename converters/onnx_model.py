"""ONNX models pass through: checked, optionally upgraded to a newer opset.

The "original" of the parity check is the model as given, run by onnxruntime, so an opset
upgrade that changes results is caught like any conversion.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import version_converter

from converters.base import Converted, load_failure, public_name, unsupported
from converters.parity import first_line, run_onnx
from converters.rename import graph_inputs
from core.errors import ConversionError, InvalidInput


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the default ONNX domain."""
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def load_onnx_file(path: Path) -> onnx.ModelProto:
    """Load an ``.onnx`` file, with any external data it keeps next to it."""
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf DecodeError, missing external data files...
        raise load_failure("an ONNX model", path, exc) from None


def convert_onnx(model: object, *, opset: int | None = None) -> Converted:
    """Check an ONNX model (object or ``.onnx`` path) and upgrade it to ``opset`` if older."""
    source = Path(model) if isinstance(model, str | Path) else None
    original = load_onnx_file(source) if source is not None else model
    if not isinstance(original, onnx.ModelProto):
        raise InvalidInput(f"expected an ONNX ModelProto, got {type(original).__name__}")
    _check(original)
    converted = _upgraded(original, opset) if opset and default_opset(original) < opset else original
    original_bytes = original.SerializeToString()
    inputs = [value.name for value in graph_inputs(converted.graph)]
    outputs = [value.name for value in converted.graph.output]
    return Converted(
        model=converted,
        predict=lambda feeds: run_onnx(original_bytes, feeds),
        framework="onnx",
        framework_version=_producer(original),
        converter=f"onnx {onnx.__version__}" + (" version converter" if converted is not original else ""),
        input_names=tuple(public_name(name, f"input_{i}") for i, name in enumerate(inputs)),
        output_names=tuple(public_name(name, f"output_{i}") for i, name in enumerate(outputs)),
        source=source,
    )


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ConversionError(f"the ONNX model fails the ONNX checker: {first_line(exc)}") from None


def _upgraded(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    try:
        upgraded = version_converter.convert_version(model, opset)
    except Exception as exc:  # the version converter raises RuntimeError/ValueError per adapter
        raise unsupported(f"cannot upgrade the ONNX model to opset {opset}", exc) from None
    # The converter keeps the old IR version; newer opsets may need a newer one.
    upgraded.ir_version = max(
        upgraded.ir_version, onnx.helper.find_min_ir_version_for(list(upgraded.opset_import))
    )
    _check(upgraded)
    return upgraded


def _producer(model: onnx.ModelProto) -> str:
    producer = f"{model.producer_name} {model.producer_version}".strip()
    return producer or "unknown producer"
