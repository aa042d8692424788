"""Trading accuracy for latency: onnxruntime graph optimisation and quantisation of a package's model.

Applied to the float ONNX model after its parity check, with onnxruntime's own tools:

* ``optimize``: the graph onnxruntime builds at its ``ORT_ENABLE_EXTENDED`` level (constant
  folding, redundant nodes removed, fusions into contrib operators), saved, so servers start from
  it. The extended level, not ``ALL``: the layout changes of ``ALL`` suit only the CPU they ran on.
* ``quantize="dynamic"``: int8 weights, activations quantised at run time
  (``quantize_dynamic``); no calibration.
* ``quantize="static"``: int8 weights and activations in QDQ format (``quantize_static``),
  activation ranges calibrated (min/max) on ``calibration`` rows, or on the samples when none
  are given (few rows: a weak calibration, which the builder warns about).

What it costs is recorded in the manifest (:class:`modelpkg.manifest.Optimization`): the float
model's sha256, and how often the optimised model answers as the float one does
(``core.answers``) on the evaluation rows, or the samples; with labels, both accuracies.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from converters.parity import run_onnx
from core.answers import agreeing_rows, label_metrics
from core.errors import ConversionError, InvalidInput
from core.onnxruntime_import import import_onnxruntime
from modelpkg.manifest import Optimization

Quantization = Literal["dynamic", "static"]
QUANTIZED_TOLERANCE = 0.05
"""The parity tolerance of a quantised model unless one is given: int8 arithmetic moves outputs by
a few hundredths where a float conversion moves them by millionths."""
CALIBRATION_BATCH = 16
DEFAULT_OPSET = 17
# After graph optimisation, fused contrib operators have no type the quantiser can infer: their
# float weights are float.
_QUANTIZER_OPTIONS = {"DefaultTensorType": onnx.TensorProto.FLOAT}


@dataclass(frozen=True)
class OptimizationRequest:
    quantize: Quantization | None = None
    optimize: bool = False
    calibration: Mapping[str, np.ndarray] | None = None
    """Rows for static quantisation, by the signature's input names; None: the samples."""
    evaluation: Mapping[str, np.ndarray] | None = None
    """Rows to measure the trade-off on, by input name; None: the samples."""
    evaluation_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.quantize not in (None, "dynamic", "static"):
            raise InvalidInput(f"quantize must be dynamic or static, not {self.quantize!r}")
        if self.calibration is not None and self.quantize != "static":
            raise InvalidInput("calibration rows are for static quantization (--quantize static)")
        if self.evaluation_labels is not None and self.evaluation is None:
            raise InvalidInput("evaluation labels need evaluation rows")

    @property
    def wanted(self) -> bool:
        return self.quantize is not None or self.optimize


def optimize_model(
    float_model: bytes,
    request: OptimizationRequest,
    samples: Mapping[str, np.ndarray],
    label_output: str | None,
    class_names: list[str],
) -> tuple[bytes, Optimization]:
    """The optimised model's bytes, and the record of what it changed."""
    model = float_model
    with tempfile.TemporaryDirectory(prefix="mdeploy-optimize-") as folder:
        work = Path(folder)
        if request.optimize:
            model = _ort_optimized(model, work)
        if request.quantize == "dynamic":
            model = _quantized_dynamic(model, work)
        elif request.quantize == "static":
            model = _quantized_static(model, request.calibration or samples, work)
    rows = request.evaluation or samples
    before = run_onnx(float_model, rows)
    after = run_onnx(model, rows)
    same = agreeing_rows(before, after, label_output)
    float_metrics, _ = label_metrics(before, label_output, class_names, request.evaluation_labels)
    new_metrics, _ = label_metrics(after, label_output, class_names, request.evaluation_labels)
    accuracy, accuracy_float = new_metrics.get("accuracy"), float_metrics.get("accuracy")
    record = Optimization(
        quantization=request.quantize,
        graph_optimized=request.optimize,
        float_model_sha256=hashlib.sha256(float_model).hexdigest(),
        float_model_bytes=len(float_model),
        calibration_rows=_rows(request.calibration or samples) if request.quantize == "static" else None,
        calibration_source=("calibration" if request.calibration is not None else "samples")
        if request.quantize == "static"
        else None,
        evaluated_on="evaluation data" if request.evaluation is not None else "samples",
        evaluation_rows=_rows(rows),
        agreement_with_float=float(np.mean(same)) if same is not None else 0.0,
        max_abs_error_vs_float=_max_abs_error(before, after),
        accuracy_float=accuracy_float,
        accuracy=accuracy,
        accuracy_delta=accuracy - accuracy_float
        if accuracy is not None and accuracy_float is not None
        else None,
    )
    return model, record


def _rows(arrays: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0])


def _max_abs_error(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]) -> float:
    errors = [
        float(np.max(np.abs(after[name].astype(np.float64) - array.astype(np.float64))))
        for name, array in before.items()
        if array.dtype.kind == "f" and name in after and array.size
    ]
    return max(errors, default=0.0)


def _ort_optimized(model: bytes, work: Path) -> bytes:
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.log_severity_level = 3  # its notes on removed initializers are not the user's business
    target = work / "optimized.onnx"
    options.optimized_model_filepath = str(target)
    try:
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own untyped errors
        raise ConversionError(f"onnxruntime cannot optimise the model: {error}") from None
    return _deterministic(target)


def _quantized_dynamic(model: bytes, work: Path) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = work / "float.onnx", work / "dynamic.onnx"
    source.write_bytes(_with_default_domain(model))
    try:
        with _without_preprocessing_advice():
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, extra_options=_QUANTIZER_OPTIONS)
    except Exception as error:  # the quantiser raises whatever its passes raise
        raise ConversionError(f"dynamic quantization failed: {error}") from None
    return _deterministic(target)


def _quantized_static(model: bytes, calibration: Mapping[str, np.ndarray], work: Path) -> bytes:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Rows(CalibrationDataReader):  # type: ignore[misc]  # untyped base class
        def __init__(self) -> None:
            self._batches = _batches(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    source, target = work / "float.onnx", work / "static.onnx"
    source.write_bytes(_with_default_domain(model))
    try:
        with _without_preprocessing_advice():
            quantize_static(
                source,
                target,
                Rows(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                extra_options=_QUANTIZER_OPTIONS,
            )
    except Exception as error:  # the quantiser raises whatever its passes raise
        raise ConversionError(f"static quantization failed: {error}") from None
    return _deterministic(target)


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """The quantiser logs advice to run its shape pre-processing, on the root logger, at every
    call; these models are shape-inferred already, and the advice is not for mdeploy's users."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _with_default_domain(model: bytes) -> bytes:
    """The quantiser needs exactly one import of the default (ai.onnx) operator set, for the
    QuantizeLinear/MatMulInteger nodes it adds. A model made only of ai.onnx.ml operators (a
    scikit-learn pipeline) may have none, or the same domain imported twice: one per domain, the
    highest version, with the default one added when missing."""
    proto = onnx.load_from_string(model)
    versions: dict[str, int] = {}
    for opset in proto.opset_import:
        domain = "" if opset.domain == "ai.onnx" else opset.domain
        versions[domain] = max(versions.get(domain, 0), opset.version)
    versions.setdefault("", DEFAULT_OPSET)
    del proto.opset_import[:]
    proto.opset_import.extend(
        onnx.helper.make_opsetid(domain, version) for domain, version in versions.items()
    )
    return proto.SerializeToString(deterministic=True)


def _batches(rows: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    for first in range(0, _rows(rows), CALIBRATION_BATCH):
        yield {name: array[first : first + CALIBRATION_BATCH] for name, array in rows.items()}


def _deterministic(path: Path) -> bytes:
    """The saved model re-serialised deterministically: the same inputs give the same bytes."""
    return onnx.load(path).SerializeToString(deterministic=True)
