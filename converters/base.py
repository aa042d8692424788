"""What every converter returns, and the checks every converted model goes through."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import onnx

from converters.parity import first_line
from core.errors import ConversionError

DEFAULT_OPSET: Final = 17
"""ONNX opset of converted models: supported by onnxruntime >= 1.14 and Triton >= 23.02."""

ML_OPSET: Final = 3
"""``ai.onnx.ml`` opset that goes with DEFAULT_OPSET (scikit-learn models use it)."""

FrameworkName = Literal["keras", "savedmodel", "sklearn", "onnx"]

Predict = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
"""Runs the original model: inputs and outputs keyed by the converted model's own names."""


@dataclass(frozen=True)
class Converted:
    """A model converted to ONNX, with a way to run the original for the parity check."""

    model: onnx.ModelProto
    predict: Predict
    framework: FrameworkName
    framework_version: str
    converter: str
    input_names: tuple[str, ...]
    """Suggested signature names for the ONNX inputs, in graph order."""
    output_names: tuple[str, ...]
    labels: tuple[str, ...] | None = None
    """Class names the model itself knows (scikit-learn ``classes_``)."""
    labels_output: str | None = None
    """The ONNX output that ``labels`` index."""
    source: Path | None = None
    """The original artifact on disk, for the package's ``source/`` folder."""


def check_converted(model: onnx.ModelProto, what: str) -> None:
    """Run the ONNX checker; a failure is a ConversionError naming the converter."""
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ConversionError(f"{what} produced an invalid ONNX model: {first_line(exc)}") from None


def public_name(name: str, fallback: str) -> str:
    """A framework tensor name made fit for a signature (``serving_default_x:0`` -> ``x``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name.split(":")[0]).strip("_.-")
    if not cleaned or not re.match(r"[A-Za-z_]", cleaned):
        return fallback
    return cleaned[:128]


def unsupported(what: str, exc: BaseException) -> ConversionError:
    """The converter's own reason, one line, without its traceback."""
    return ConversionError(f"{what}: {first_line(exc)}")


def load_failure(what: str, path: Path, exc: BaseException) -> ConversionError:
    return ConversionError(f"cannot load {what} from {path}: {first_line(exc)}")
