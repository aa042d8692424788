"""Do a package's samples reproduce? onnxruntime only: safe on the serving side."""

from __future__ import annotations

from converters.parity import ParityReport, compare, run_onnx
from core.errors import PackageError
from modelpkg.manifest import OutputParity, Parity
from modelpkg.reader import Package


def verify_samples(package: Package, *, tolerance: float | None = None) -> ParityReport:
    """Run model.onnx on the sample inputs and compare with the stored expected outputs.

    The tolerance defaults to the one the package was built with. Raises PackageError with
    the worst element when they disagree or when onnxruntime cannot run the model.
    """
    limit = package.manifest.parity.tolerance if tolerance is None else tolerance
    inputs = package.samples.inputs
    if package.external_data:
        with package.model_folder() as path:
            actual = run_onnx(path, inputs, error=PackageError)
    else:
        actual = run_onnx(package.model, inputs, error=PackageError)
    report = compare(package.samples.outputs, actual, limit)
    if not report.passed:
        raise PackageError(f"model.onnx does not reproduce the package's samples: {report.failure_message()}")
    return report


def parity_record(report: ParityReport) -> Parity:
    """The manifest's form of a parity report."""
    return Parity(
        rows=report.rows,
        tolerance=report.tolerance,
        max_abs_error=report.max_abs_error,
        max_rel_error=report.max_rel_error,
        passed=report.passed,
        outputs={
            name: OutputParity(
                max_abs_error=output.max_abs_error,
                max_rel_error=output.max_rel_error,
                mismatches=output.mismatches,
            )
            for name, output in report.outputs.items()
        },
    )
