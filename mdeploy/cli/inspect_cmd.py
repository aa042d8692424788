"""``mdeploy inspect``: what a package holds, read with the same safe reader as the gateway."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mdeploy.cli.output import table_console
from modelpkg import Manifest, Package, read_package, verify_samples
from modelpkg.manifest import ManifestTensor


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show a package's manifest, signature, parity, provenance and digest",
        description="Check a package (paths, sizes, hashes, ONNX) and show what it holds.",
    )
    parser.add_argument("package", metavar="PACKAGE", type=Path, help="a model.pkg file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--verify", action="store_true", help="also run model.onnx on the samples (onnxruntime)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    package = read_package(args.package)
    verified = verify_samples(package) if args.verify else None
    if args.json:
        document: dict[str, Any] = {
            "digest": package.digest,
            "size": args.package.stat().st_size,
            "manifest": package.manifest.model_dump(mode="json"),
        }
        if verified is not None:
            document["verified"] = {"max_abs_error": verified.max_abs_error, "passed": verified.passed}
        print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    console = table_console()
    _show(console, package, args.package)
    if verified is not None:
        console.print(f"[green]✓[/] samples reproduce (max abs error {verified.max_abs_error:.3g})")
    return 0


def _show(console: Console, package: Package, path: Path) -> None:
    manifest = package.manifest
    console.print(f"[bold]{escape(manifest.name)}[/] version {escape(manifest.version)}")
    console.print(f"digest  sha256:{package.digest}")
    console.print(f"file    {escape(str(path))} ({path.stat().st_size} bytes)")
    for table in (
        _overview(manifest),
        _signature(manifest),
        _parity(manifest),
        _provenance(manifest),
        _files(manifest),
    ):
        console.print(table)


def _pairs(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, escape(value))
    return table


def _overview(manifest: Manifest) -> Table:
    framework = manifest.framework
    serving = manifest.serving
    labels = manifest.labels
    rows = [
        ("description", manifest.description or "-"),
        ("tags", ", ".join(manifest.tags) or "-"),
        ("framework", f"{framework.name} {framework.version}"),
        ("converter", f"{framework.converter}, opset {framework.opset}"),
        ("labels", f"{labels.output}: {_shorten(labels.names)}" if labels else "-"),
        ("metrics", ", ".join(f"{k}={v:g}" for k, v in sorted(manifest.metrics.items())) or "-"),
        ("reference", _reference(manifest)),
        ("optimised", _optimised(manifest)),
        (
            "serving",
            f"max batch {serving.max_batch_size}, preferred {serving.preferred_batch_sizes or '-'}, "
            f"queue delay {serving.max_queue_delay_us} us, {serving.instances} instance(s), "
            f"device {serving.device}",
        ),
    ]
    return _pairs("Package", rows)


def _reference(manifest: Manifest) -> str:
    reference = manifest.reference
    if reference is None:
        return "none (drift is reported as 'no reference')"
    weak = ", the samples: a weak reference" if reference.source == "samples" else ""
    return (
        f"{reference.rows} rows{weak}; {reference.input_features} input and {reference.output_features} "
        f"output features; sha256:{reference.sha256[:12]}"
    )


def _optimised(manifest: Manifest) -> str:
    record = manifest.optimization
    if record is None:
        return "-"
    what = [f"{record.quantization} int8"] if record.quantization else []
    if record.graph_optimized:
        what.append("graph optimised")
    return (
        f"{' + '.join(what)} from float sha256:{record.float_model_sha256[:12]}; answers as the float "
        f"model on {record.agreement_with_float:.1%} of {record.evaluation_rows} {record.evaluated_on} rows"
    )


def _shorten(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def _signature(manifest: Manifest) -> Table:
    table = Table(title="ManifestSignature", title_justify="left")
    for column in ("", "name", "datatype", "shape"):
        table.add_column(column)
    for kind, specs in (("input", manifest.signature.inputs), ("output", manifest.signature.outputs)):
        for spec in specs:
            table.add_row(kind, escape(spec.name), spec.datatype, _shape(spec))
    return table


def _shape(spec: ManifestTensor) -> str:
    return "[" + ", ".join(str(size) for size in spec.shape) + "]"


def _parity(manifest: Manifest) -> Table:
    parity = manifest.parity
    table = Table(
        title=f"Parity: {parity.rows} sample rows, tolerance {parity.tolerance:g}, "
        f"{'passed' if parity.passed else 'FAILED'}",
        title_justify="left",
    )
    for column in ("output", "max abs error", "max rel error", "mismatches"):
        table.add_column(column)
    for name, output in parity.outputs.items():
        table.add_row(
            escape(name), f"{output.max_abs_error:.3g}", f"{output.max_rel_error:.3g}", str(output.mismatches)
        )
    return table


def _provenance(manifest: Manifest) -> Table:
    source = manifest.provenance
    commit = source.code_commit or "-"
    if source.code_dirty:
        commit += " (uncommitted changes)"
    rows = [
        ("created", f"{source.created_at.isoformat()} by {source.created_by}"),
        ("code commit", commit),
        ("parent", source.parent_digest or "-"),
    ]
    rows += [
        (f"data {i + 1}", f"{item.path} sha256:{item.sha256} ({item.size} bytes)")
        for i, item in enumerate(source.data)
    ]
    return _pairs("Provenance", rows)


def _files(manifest: Manifest) -> Table:
    # Short hashes keep the table narrow; --json has them in full.
    return _pairs("Files", [(name, f"sha256:{sha[:16]}...") for name, sha in sorted(manifest.files.items())])
