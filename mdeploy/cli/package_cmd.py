"""``mdeploy package``: convert a trained model into a checked, deterministic model.pkg."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from converters.sklearn import SKLEARN_TYPES
from core.errors import InvalidInput
from mdeploy.cli.progress import QuietSteps, RichSteps
from modelpkg import DEFAULT_TOLERANCE, ServingHints, build
from modelpkg.builder import DEFAULT_SAMPLE_ROWS
from modelpkg.inputs import load_labels, load_samples
from modelpkg.manifest import Optimization
from modelpkg.optimization import OptimizationRequest

DESCRIPTION = """\
Convert a trained model to ONNX, check that the ONNX model computes what the original
computes on sample rows (parity), and write model.pkg: MANIFEST.json, model.onnx,
samples.npz. The same model, samples and metadata always give the same bytes (set
SOURCE_DATE_EPOCH to pin the creation time).

MODEL is a .keras file, a SavedModel directory, a scikit-learn .skops file (or a
.pkl/.joblib pickle with --trust-pickle), or an .onnx file.
"""

TRUST_PICKLE_HELP = (
    "load a .pkl/.joblib scikit-learn model. Unpickling runs whatever code the file holds, "
    "so a model from someone else could take over this machine; only use this for files "
    "you made yourself, and prefer .skops files (skops.io.dump), which load without running code"
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "package",
        help="convert a trained model into a checked model.pkg",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(parser)
    _metadata_arguments(parser)
    _serving_arguments(parser)
    _optimization_arguments(parser)
    _reference_arguments(parser)
    parser.add_argument("-o", "--output", required=True, type=Path, help="the package file to write")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    parser.set_defaults(handler=run)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", type=Path, help="model file or SavedModel directory")
    parser.add_argument(
        "--framework",
        choices=["auto", "keras", "savedmodel", "sklearn", "onnx"],
        default="auto",
        help="model framework (default: from the file)",
    )
    parser.add_argument(
        "--samples",
        required=True,
        type=Path,
        metavar="FILE",
        help="sample input rows: .npy, or .npz by input name",
    )
    parser.add_argument(
        "--sample-rows", type=int, default=DEFAULT_SAMPLE_ROWS, help="rows kept (default: %(default)s)"
    )
    parser.add_argument(
        "--tolerance",
        type=_non_negative,
        default=DEFAULT_TOLERANCE,
        help="largest absolute or relative error allowed per element (default: %(default)g)",
    )
    parser.add_argument("--opset", type=int, help="ONNX opset (default: 17; ONNX models keep theirs)")
    parser.add_argument("--input-name", action="append", help="signature name of each input, in order")
    parser.add_argument("--output-name", action="append", help="signature name of each output, in order")
    parser.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    parser.add_argument(
        "--trust-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="a type to trust in a .skops file (repeatable; PACKAGE.* trusts a whole package)",
    )
    parser.add_argument(
        "--trust-sklearn-types",
        action="store_true",
        help="trust scikit-learn's own types in a .skops file (trees and forests need them)",
    )
    parser.add_argument(
        "--include-source", action="store_true", help="also store the original model under source/"
    )


def _metadata_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="model name")
    parser.add_argument("--version", default="1", help="model version (default: %(default)s)")
    parser.add_argument("--description", default="", help="what the model does")
    parser.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    parser.add_argument(
        "--labels", type=Path, metavar="FILE", help="class names: one per line, or a JSON list"
    )
    parser.add_argument("--labels-output", metavar="NAME", help="the output the labels index")
    parser.add_argument(
        "--data",
        nargs="+",
        action="extend",
        default=[],
        type=Path,
        metavar="FILE",
        help="training/evaluation data files, recorded by sha256",
    )
    parser.add_argument(
        "--metric",
        nargs="+",
        action="extend",
        default=[],
        type=_metric,
        metavar="K=V",
        help="metrics, e.g. accuracy=0.97 f1=0.95",
    )
    parser.add_argument("--parent", metavar="DIGEST|FILE", help="the package this one follows")
    parser.add_argument("--created-by", help="who built it (default: the login name)")


def _serving_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServingHints()
    group = parser.add_argument_group(
        "serving hints", "how the inference server should run the model (its Triton configuration)"
    )
    add = group.add_argument
    add(
        "--max-batch-size",
        type=int,
        default=defaults.max_batch_size,
        help=f"most rows merged into one run (default {defaults.max_batch_size}; 0: no batching)",
    )
    add(
        "--preferred-batch-size",
        type=int,
        action="append",
        default=[],
        metavar="ROWS",
        help="a batch size the server should aim for (repeatable; default none)",
    )
    add(
        "--max-queue-delay-us",
        type=int,
        default=defaults.max_queue_delay_us,
        metavar="US",
        help=f"µs a request may wait for others to batch with (default {defaults.max_queue_delay_us})",
    )
    add(
        "--instances",
        type=int,
        default=defaults.instances,
        help=f"model instances that run batches at once (default {defaults.instances})",
    )
    add(
        "--device",
        choices=["auto", "cpu", "gpu"],
        default=defaults.device,
        help=f"where it runs: auto (the server's device), cpu or gpu (default {defaults.device})",
    )


def _optimization_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "latency versus accuracy",
        "onnxruntime's quantization and graph optimisation, applied after the parity check; the "
        "manifest records the float model's sha256 as the parent and what the change cost",
    )
    add = group.add_argument
    add(
        "--quantize",
        choices=["dynamic", "static"],
        help="int8 weights (dynamic: activations at run time; static: calibrated activations too)",
    )
    add(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="static: calibration rows, .npy or .npz by input name",
    )
    add("--optimize", action="store_true", help="save onnxruntime's optimised graph (extended level)")
    add("--eval-data", type=Path, metavar="FILE", help="rows to measure the change on (default: the samples)")
    add(
        "--eval-labels",
        type=Path,
        metavar="FILE",
        help="labels of --eval-data (.npy): accuracy before and after",
    )


def _reference_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "reference profile",
        "what the inputs and outputs looked like in training, for drift detection by the gateway",
    )
    group.add_argument(
        "--reference",
        type=Path,
        metavar="FILE",
        help="training rows: .npy, .npz by input name, or .parquet (numeric columns, or the input.<name> "
        "columns of `mdeploy logs export`); default: the samples, a weak reference",
    )
    group.add_argument(
        "--profile-reduction",
        choices=["channel-mean", "mean"],
        default="channel-mean",
        help="inputs of 3+ dimensions (images) as one feature per channel (default) or one mean",
    )


MAX_OPTIMIZATION_ROWS = 100_000


def _optimization(args: argparse.Namespace) -> OptimizationRequest | None:
    if args.quantize is None and not args.optimize:
        for flag, value in (("--calibration", args.calibration), ("--eval-data", args.eval_data)):
            if value is not None:
                raise InvalidInput(f"{flag} goes with --quantize or --optimize")
        return None
    labels = None
    if args.eval_labels is not None:
        labels = next(iter(load_samples(args.eval_labels, MAX_OPTIMIZATION_ROWS).values())).reshape(-1)
    return OptimizationRequest(
        quantize=args.quantize,
        optimize=args.optimize,
        calibration=load_samples(args.calibration, MAX_OPTIMIZATION_ROWS) if args.calibration else None,
        evaluation=load_samples(args.eval_data, MAX_OPTIMIZATION_ROWS) if args.eval_data else None,
        evaluation_labels=labels,
    )


def _metric(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not name or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}")
    return name, number


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def _serving(args: argparse.Namespace) -> ServingHints:
    from pydantic import ValidationError

    from modelpkg.manifest import first_error

    try:
        return ServingHints(
            max_batch_size=args.max_batch_size,
            preferred_batch_sizes=args.preferred_batch_size,
            max_queue_delay_us=args.max_queue_delay_us,
            instances=args.instances,
            device=args.device,
        )
    except ValidationError as exc:
        raise InvalidInput(f"invalid serving hints: {first_error(exc)}") from None


def run(args: argparse.Namespace) -> int:
    progress = Console(stderr=True)
    optimization = _optimization(args)
    built = build(
        args.model,
        args.output,
        name=args.name,
        version=args.version,
        framework=args.framework,
        samples=args.samples,
        sample_rows=args.sample_rows,
        tolerance=args.tolerance,
        opset=args.opset,
        input_names=args.input_name,
        output_names=args.output_name,
        labels=load_labels(args.labels) if args.labels else None,
        labels_output=args.labels_output,
        description=args.description,
        tags=args.tag,
        metrics=dict(args.metric),
        serving=_serving(args),
        data_files=args.data,
        parent=args.parent,
        trust_pickle=args.trust_pickle,
        trusted_types=[*args.trust_type, *([SKLEARN_TYPES] if args.trust_sklearn_types else [])],
        include_source=args.include_source,
        created_by=args.created_by,
        steps=QuietSteps() if args.quiet else RichSteps(progress),
        optimization=optimization,
        reference=args.reference,
        reference_reduction=args.profile_reduction,
    )
    parity = built.manifest.parity
    console = Console(soft_wrap=True)
    console.print(
        f"[bold]{escape(str(built.path))}[/]  {built.manifest.name} {built.manifest.version}  "
        f"sha256:{built.digest}  parity max abs error {parity.max_abs_error:.3g} ({parity.rows} rows, "
        f"tolerance {parity.tolerance:g})",
        highlight=False,
    )
    if built.manifest.optimization is not None:
        console.print(describe_optimization(built.manifest.optimization), highlight=False, markup=False)
    record = built.manifest.optimization
    if record is not None and record.calibration_source == "samples":
        progress.print(
            "warning: static quantization calibrated on the samples; a few rows make a weak "
            "calibration: give --calibration rows.npy",
            style="yellow",
            soft_wrap=True,
            highlight=False,
        )
    reference = built.manifest.reference
    if reference is not None and reference.source == "samples":
        # After the build: a failed one says one thing only, its error.
        progress.print(
            f"warning: no --reference: the reference profile for drift detection is made of the "
            f"{reference.rows} sample rows, a weak reference; give the training rows with --reference",
            style="yellow",
            soft_wrap=True,
            highlight=False,
        )
    return 0


def describe_optimization(record: Optimization) -> str:
    """One line: what changed, the size, and what it cost against the float model."""
    what = [f"{record.quantization} int8 quantization"] if record.quantization else []
    if record.graph_optimized:
        what.append("onnxruntime graph optimisation")
    line = (
        f"{' + '.join(what)}: float model sha256:{record.float_model_sha256[:12]} "
        f"({record.float_model_bytes:,} bytes); answers as the float model on "
        f"{record.agreement_with_float:.1%} of {record.evaluation_rows} {record.evaluated_on} rows"
    )
    if (
        record.accuracy is not None
        and record.accuracy_float is not None
        and record.accuracy_delta is not None
    ):
        line += (
            f"; accuracy {record.accuracy_float:.4f} → {record.accuracy:.4f} ({record.accuracy_delta:+.4f})"
        )
    return line
