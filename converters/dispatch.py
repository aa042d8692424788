"""Which converter handles a model, decided from the object's type or the file's form.

Only frameworks already imported by the caller are inspected for objects, so detecting the
framework of an ONNX file never imports TensorFlow or scikit-learn.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import numpy as np

from converters.base import DEFAULT_OPSET, Converted, FrameworkName
from core.errors import InvalidInput

Framework = FrameworkName
FRAMEWORKS: tuple[str, ...] = get_args(Framework)
_SKLEARN_FILES = (".skops", ".pkl", ".pickle", ".joblib")


def detect_framework(model: object) -> Framework:
    """The framework of a model object or path; InvalidInput says what is accepted."""
    if isinstance(model, str | Path):
        return _detect_path(Path(model))
    if _is_instance(model, "onnx", "ModelProto"):
        return "onnx"
    if _is_instance(model, "keras", "Model"):
        return "keras"
    if "sklearn" in sys.modules and hasattr(model, "fit") and hasattr(model, "get_params"):
        return "sklearn"
    raise InvalidInput(
        f"cannot tell the framework of a {type(model).__name__}; pass a Keras model, a scikit-learn "
        "estimator, an onnx.ModelProto or a path to a model file or SavedModel directory"
    )


def _is_instance(model: object, module: str, name: str) -> bool:
    loaded = sys.modules.get(module)
    kind = getattr(loaded, name, None) if loaded is not None else None
    return isinstance(kind, type) and isinstance(model, kind)


def _detect_path(path: Path) -> Framework:
    if not path.exists():
        raise InvalidInput(f"model {path} does not exist")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise InvalidInput(
            f"{path} is a directory without saved_model.pb; only SavedModel directories are accepted"
        )
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return "keras"
    if suffix == ".onnx":
        return "onnx"
    if suffix in _SKLEARN_FILES:
        return "sklearn"
    raise InvalidInput(
        f"cannot tell the framework of {path.name}; expected .keras, .onnx, .skops, .pkl/.joblib "
        "or a SavedModel directory (or pass --framework)"
    )


def convert(
    model: object,
    framework: Framework,
    *,
    sample: np.ndarray,
    opset: int | None = None,
    trust_pickle: bool = False,
    trusted_types: Sequence[str] = (),
) -> Converted:
    """Convert with the framework's converter; ``sample`` is the first input's sample rows.

    ``opset`` defaults to DEFAULT_OPSET for conversions; an ONNX model keeps its own opset
    unless one is given.
    """
    if framework == "onnx":
        from converters.onnx_model import convert_onnx

        return convert_onnx(model, opset=opset)
    opset = opset or DEFAULT_OPSET
    if framework == "keras":
        from converters.keras import convert_keras

        return convert_keras(model, opset=opset)
    if framework == "savedmodel":
        from converters.savedmodel import convert_savedmodel

        if not isinstance(model, str | Path):
            raise InvalidInput("a SavedModel is given as the path of its directory")
        return convert_savedmodel(Path(model), opset=opset)
    from converters.sklearn import convert_sklearn

    return convert_sklearn(model, sample, opset=opset, trust_pickle=trust_pickle, trusted_types=trusted_types)
