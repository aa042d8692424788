"""The parity check: does the ONNX model compute what the original model computes?

Both run on the same sample rows; every output element is compared. An element agrees when
its absolute error or its relative error is within the tolerance, i.e.
``|onnx - expected| <= tolerance * max(1, |expected|)``: absolute near zero (probabilities),
relative for large values (regressions). Integer, boolean and string outputs must be equal.
Only numpy and onnxruntime are used, so the serving side can run it on uploads.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ConversionError, MdeployError
from core.onnxruntime_import import import_onnxruntime


@dataclass(frozen=True)
class Worst:
    """The element furthest from agreement in one output."""

    index: tuple[int, ...]
    expected: object
    actual: object
    abs_error: float
    rel_error: float


@dataclass(frozen=True)
class OutputReport:
    """Agreement of one output; ``problem`` is set when the outputs cannot even be compared."""

    name: str
    max_abs_error: float
    max_rel_error: float
    mismatches: int
    worst: Worst | None = None
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and self.mismatches == 0


@dataclass(frozen=True)
class ParityReport:
    """Agreement of every output on ``rows`` sample rows."""

    rows: int
    tolerance: float
    outputs: dict[str, OutputReport]

    @property
    def passed(self) -> bool:
        return all(output.passed for output in self.outputs.values())

    @property
    def max_abs_error(self) -> float:
        return max((output.max_abs_error for output in self.outputs.values()), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((output.max_rel_error for output in self.outputs.values()), default=0.0)

    def failure_message(self) -> str:
        """One line naming the first failing output and its worst element."""
        failing = next((output for output in self.outputs.values() if not output.passed), None)
        if failing is None:
            return "parity passed"
        if failing.problem is not None:
            return f"parity failed: output {failing.name!r}: {failing.problem}"
        return f"parity failed: output {failing.name!r}: {_describe(failing, self.tolerance)}"


def _describe(output: OutputReport, tolerance: float) -> str:
    worst = output.worst
    assert worst is not None, "a numeric mismatch always has a worst element"
    where = list(worst.index)
    return (
        f"{output.mismatches} element(s) beyond tolerance {tolerance:g}; worst at {where}: "
        f"ONNX {worst.actual!r} vs original {worst.expected!r} "
        f"(abs error {worst.abs_error:.3g}, rel error {worst.rel_error:.3g})"
    )


def compare(
    expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tolerance: float
) -> ParityReport:
    """Compare the original model's outputs with the ONNX model's, output by output."""
    rows = int(next(iter(expected.values())).shape[0]) if expected else 0
    outputs = {
        name: _compare_output(name, value, actual.get(name), tolerance) for name, value in expected.items()
    }
    return ParityReport(rows=rows, tolerance=tolerance, outputs=outputs)


def _compare_output(
    name: str, expected: np.ndarray, actual: np.ndarray | None, tolerance: float
) -> OutputReport:
    if actual is None:
        return _problem(name, "the ONNX model does not produce it")
    actual = np.asarray(actual)
    if expected.shape != actual.shape:
        return _problem(name, f"shape {actual.shape} from ONNX but {expected.shape} from the original model")
    if _is_text(expected) or _is_text(actual):
        return _compare_text(name, expected, actual)
    return _compare_numbers(name, expected, actual, tolerance)


def _problem(name: str, problem: str) -> OutputReport:
    return OutputReport(name=name, max_abs_error=0.0, max_rel_error=0.0, mismatches=0, problem=problem)


def _is_text(array: np.ndarray) -> bool:
    return array.dtype.kind in ("U", "S", "O")


def _compare_text(name: str, expected: np.ndarray, actual: np.ndarray) -> OutputReport:
    differs = expected.astype(str) != actual.astype(str)
    mismatches = int(differs.sum())
    worst = None
    if mismatches:
        index = tuple(int(i) for i in np.argwhere(differs)[0])
        worst = Worst(index, str(expected[index]), str(actual[index]), float("inf"), float("inf"))
    return OutputReport(name, 0.0, 0.0, mismatches, worst)


def _compare_numbers(name: str, expected: np.ndarray, actual: np.ndarray, tolerance: float) -> OutputReport:
    want = expected.astype(np.float64)
    got = actual.astype(np.float64)
    both_nan = np.isnan(want) & np.isnan(got)
    with np.errstate(invalid="ignore", over="ignore"):
        abs_error = np.where((want == got) | both_nan, 0.0, np.abs(got - want))
    abs_error = np.nan_to_num(abs_error, nan=np.inf)
    scale = np.maximum(1.0, np.abs(np.nan_to_num(want)))
    normalised = abs_error / scale
    nonzero = want != 0
    rel_error = np.divide(abs_error, np.abs(want), out=np.zeros_like(abs_error), where=nonzero)
    mismatches = int((normalised > tolerance).sum())
    worst = _worst(expected, actual, abs_error, rel_error, normalised) if abs_error.size else None
    return OutputReport(name, _finite_max(abs_error), _finite_max(rel_error), mismatches, worst)


def _worst(
    expected: np.ndarray,
    actual: np.ndarray,
    abs_error: np.ndarray,
    rel_error: np.ndarray,
    normalised: np.ndarray,
) -> Worst:
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(normalised)), normalised.shape))
    return Worst(
        index,
        expected[index].item(),
        actual[index].item(),
        float(abs_error[index]),
        float(rel_error[index]),
    )


def _finite_max(errors: np.ndarray) -> float:
    # JSON has no infinity: a NaN-vs-number disagreement is recorded as the largest float.
    return min(float(errors.max(initial=0.0)), sys.float_info.max)


def run_onnx(
    model: bytes | Path,
    inputs: Mapping[str, np.ndarray],
    error: type[MdeployError] = ConversionError,
) -> dict[str, np.ndarray]:
    """Run an ONNX model on CPU with onnxruntime; failures become ``error`` with ORT's reason."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    # One thread: the same numbers on every run, whatever the machine's load.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        results = session.run(names, dict(inputs))
    except Exception as exc:  # onnxruntime raises its own untyped pybind errors
        raise error(f"onnxruntime cannot run the model: {first_line(exc)}") from None
    return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}


def first_line(exc: BaseException, limit: int = 500) -> str:
    """The first non-empty line of an exception message, shortened: errors stay one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
