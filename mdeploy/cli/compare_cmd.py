"""``mdeploy compare REF REF...``: model versions side by side (see ``mdeploy.comparison``)."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from core.errors import InvalidInput
from mdeploy import comparison
from mdeploy.cli.output import table_console
from mdeploy.cli.registry_client import Reference, add_gateway_arguments, connect

DESCRIPTION = """\
Show versions side by side: NAME:VERSION on the gateway, or a package file never pushed
(measured in this process on onnxruntime, and labelled so). Rows that differ are
highlighted.

From the packages: size, framework and converter, signature, parity, provenance (data file
hashes, code commit, parent, created) and recorded training metrics. With --data (and
--labels): accuracy, log-loss and agreement with the first reference, p50/p99 of 1-row
requests and rows/s in 32-row requests (gateway versions through its HTTP API). For a
gateway version in a rollout: its requests, error rate, p99 and mean reward.

  mdeploy compare digits:1 digits:2 ./candidate.pkg --data eval.npz --labels y.npy
"""
MAX_REFERENCES = 8


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare versions and packages side by side",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("references", metavar="REF", nargs="+", help="NAME:VERSION or a .pkg file")
    add_gateway_arguments(parser)
    parser.add_argument("--data", type=Path, help="evaluation set: .npz of inputs by name (or .npy)")
    parser.add_argument("--labels", type=Path, help="labels for --data: .npy, one per row")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    references: list[str] = args.references
    if not 2 <= len(references) <= MAX_REFERENCES:
        raise InvalidInput(f"compare takes 2 to {MAX_REFERENCES} references, got {len(references)}")
    if args.labels and not args.data:
        raise InvalidInput("--labels needs --data (the rows they label)")
    with contextlib.ExitStack() as stack:
        client = None
        columns, infers = [], []
        for reference in references:
            if comparison.is_package_path(reference):
                column, infer = comparison.local_column(Path(reference))
            else:
                named = Reference.parse(reference, version_required=True)
                if client is None:
                    client = stack.enter_context(connect(args))
                assert named.version is not None
                column, infer = comparison.gateway_column(client, named.name, named.version)
            columns.append(column)
            infers.append(infer)
        if args.data:
            inputs, labels = comparison.read_data(args.data, args.labels, columns)
            for column, infer in zip(columns, infers, strict=True):
                comparison.measure(column, infer, inputs, labels)
            comparison.agreement(columns)
    if args.json:
        print(json.dumps(comparison.report(columns), indent=2, sort_keys=True))
        return 0
    console = table_console()
    console.print(_table("From the packages", columns, comparison.static_rows(columns)))
    if args.data:
        title = f"Measured on {args.data.name}" + (f" with {args.labels.name}" if args.labels else "")
        console.print(_table(title, columns, comparison.measured_rows(columns)))
    if any(column.live for column in columns):
        console.print(
            _table("Live (routing, since the rollout began)", columns, comparison.live_rows(columns))
        )
    return 0


def _table(title: str, columns: list[comparison.Column], rows: list[tuple[str, list[str]]]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("")
    for column in columns:
        table.add_column(column.label, overflow="fold")
    for what, values in rows:
        differs = len(set(values)) > 1
        style = "bold yellow" if differs else None
        table.add_row(what, *values, style=style)
    return table
