"""scikit-learn estimators and pipelines -> ONNX via skl2onnx.

Classifiers are converted without ZipMap, so probabilities are a plain FP32 tensor
``[batch, classes]`` next to the ``label`` tensor, which is what v2 clients can read.

Model files: ``.skops`` is loaded with skops, which refuses types it does not trust instead
of running code. Pickle and joblib files run arbitrary code when loaded, so they are only
read when the caller says it trusts their origin (``trust_pickle``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx

from converters.base import (
    DEFAULT_OPSET,
    ML_OPSET,
    Converted,
    Predict,
    check_converted,
    load_failure,
    unsupported,
)
from converters.rename import canonicalize
from core.errors import InvalidInput

SKOPS_SUFFIXES: Final = (".skops",)
PICKLE_SUFFIXES: Final = (".pkl", ".pickle", ".joblib")
PICKLE_REFUSED: Final = (
    "loading {path} would run arbitrary code: pickle and joblib files execute whatever they "
    "contain. Save the model with skops (skops.io.dump(model, 'model.skops')), or pass "
    "--trust-pickle (trust_pickle=True) if you made the file yourself"
)


def load_sklearn_file(path: Path, *, trust_pickle: bool = False, trusted_types: Sequence[str] = ()) -> Any:
    """Load an estimator from ``.skops`` (safe) or, when trusted, pickle/joblib."""
    suffix = path.suffix.lower()
    if suffix in SKOPS_SUFFIXES:
        return _load_skops(path, trusted_types)
    if suffix in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise InvalidInput(PICKLE_REFUSED.format(path=path))
        import joblib

        try:
            return joblib.load(path)
        except Exception as exc:  # unpickling raises whatever the pickled code raises
            raise load_failure("a scikit-learn model", path, exc) from None
    raise InvalidInput(f"{path}: scikit-learn models must be .skops, or .pkl/.joblib with --trust-pickle")


# What --trust-sklearn-types trusts: scikit-learn's own classes (its Cython trees and loss
# functions, which skops leaves out of its default list), not numpy or anything else.
SKLEARN_TYPES = "sklearn.*"


def is_trusted(name: str, trusted: Sequence[str]) -> bool:
    """``name`` is listed, or falls under a listed ``package.*``."""
    return any(name == t or (t.endswith(".*") and name.startswith(t[:-1])) for t in trusted)


def untrusted_message(path: Path, untrusted: list[str]) -> str:
    flags = " ".join(f"--trust-type {name}" for name in untrusted)
    message = (
        f"{path} uses types skops does not trust by default: {', '.join(untrusted)}; "
        f"check them, then pass {flags}"
    )
    if all(is_trusted(name, [SKLEARN_TYPES]) for name in untrusted):
        message += " (or --trust-sklearn-types: they are all scikit-learn's own)"
    return message


def _load_skops(path: Path, trusted_types: Sequence[str]) -> Any:
    import skops.io

    try:
        found = list(skops.io.get_untrusted_types(file=path))
    except Exception as exc:  # not a skops archive, or a corrupt one
        raise load_failure("a skops model", path, exc) from None
    untrusted = [name for name in found if not is_trusted(name, trusted_types)]
    if untrusted:
        raise InvalidInput(untrusted_message(path, untrusted))
    try:
        return skops.io.load(path, trusted=found or None)
    except Exception as exc:  # skops surfaces the failing type's own error
        raise load_failure("a skops model", path, exc) from None


def convert_sklearn(
    model: object,
    sample: np.ndarray,
    *,
    opset: int = DEFAULT_OPSET,
    trust_pickle: bool = False,
    trusted_types: Sequence[str] = (),
) -> Converted:
    """Convert a fitted estimator (or a model file path); ``sample`` fixes the input type."""
    import sklearn

    source = Path(model) if isinstance(model, str | Path) else None
    if source is not None:
        model = load_sklearn_file(source, trust_pickle=trust_pickle, trusted_types=trusted_types)
    _check_estimator(model)
    onnx_model = _to_onnx(model, _input_example(sample), opset)
    outputs = [value.name for value in onnx_model.graph.output]
    classifier = _is_classifier(model)
    return Converted(
        model=onnx_model,
        predict=_predict(model, onnx_model),
        framework="sklearn",
        framework_version=sklearn.__version__,
        converter=f"skl2onnx {_skl2onnx_version()}",
        input_names=("input",),
        output_names=tuple("prediction" if name == "variable" else name for name in outputs),
        labels=tuple(str(c) for c in model.classes_) if classifier and hasattr(model, "classes_") else None,
        labels_output="probabilities" if classifier and "probabilities" in outputs else None,
        source=source,
    )


def _check_estimator(model: object) -> None:
    if not hasattr(model, "fit") or not (hasattr(model, "predict") or hasattr(model, "transform")):
        raise InvalidInput(f"expected a fitted scikit-learn estimator, got {type(model).__name__}")


def _is_classifier(model: object) -> bool:
    from sklearn.base import is_classifier

    return bool(is_classifier(model))


def _input_example(sample: np.ndarray) -> np.ndarray:
    """One row in the type the ONNX input will take: float32 for any float, int64 for ints."""
    row = np.asarray(sample[:1])
    if row.ndim != 2:
        raise InvalidInput(
            f"scikit-learn samples must be a 2-D [rows, features] array, got shape {row.shape}"
        )
    if row.dtype.kind == "f":
        return row.astype(np.float32)
    if row.dtype.kind in "iub":
        return row.astype(np.int64)
    raise InvalidInput(f"scikit-learn samples must be numeric, got {row.dtype}")


def _classifier_types(model: object) -> set[type]:
    """Types of every classifier in the model, nested ones included (pipelines, ensembles)."""
    from sklearn.base import BaseEstimator

    params = model.get_params(deep=True).values() if hasattr(model, "get_params") else []
    estimators = [item for item in [model, *params] if isinstance(item, BaseEstimator)]
    return {type(item) for item in estimators if _is_classifier(item)}


def _to_onnx(model: object, example: np.ndarray, opset: int) -> onnx.ModelProto:
    from skl2onnx import to_onnx

    options: dict[Any, Any] = {kind: {"zipmap": False} for kind in _classifier_types(model)}
    try:
        onnx_model: onnx.ModelProto = to_onnx(
            model, example, options=options, target_opset={"": opset, "ai.onnx.ml": ML_OPSET}
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, MissingShapeCalculator, NotImplementedError...
        raise unsupported(f"skl2onnx cannot convert {type(model).__name__}", exc) from None
    canonicalize(onnx_model)
    check_converted(onnx_model, "skl2onnx")
    return onnx_model


def _skl2onnx_version() -> str:
    import skl2onnx

    return str(skl2onnx.__version__)


def _predict(model: Any, onnx_model: onnx.ModelProto) -> Predict:
    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in onnx_model.graph.output}

    def predict(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        (rows,) = inputs.values()
        return {name: _match_rank(_run(model, name, rows), rank) for name, rank in ranks.items()}

    return predict


def _run(model: Any, output: str, rows: np.ndarray) -> np.ndarray:
    if output == "label":
        return np.asarray(model.predict(rows))
    if output == "probabilities":
        scores = model.predict_proba if hasattr(model, "predict_proba") else model.decision_function
        return np.asarray(scores(rows))
    result = model.predict(rows) if hasattr(model, "predict") else model.transform(rows)
    return np.asarray(result.toarray() if hasattr(result, "toarray") else result)


def _match_rank(values: np.ndarray, rank: int) -> np.ndarray:
    # scikit-learn returns regressions as [rows]; skl2onnx declares [rows, 1].
    if rank == values.ndim + 1:
        return values.reshape(*values.shape, 1)
    return values
