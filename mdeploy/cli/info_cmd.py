"""``mdeploy info NAME[:VERSION]``: a model's versions, or one version's details, from a gateway."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mdeploy.cli.evaluation_set import evaluation_table, verdict_line
from mdeploy.cli.list_cmd import versions_table
from mdeploy.cli.output import table_console
from mdeploy.cli.registry_client import Reference, add_gateway_arguments, connect


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show a model's versions, or one version's manifest",
        description="NAME lists every version of a model, deleted ones included; NAME:VERSION shows "
        "that version: what it serves, digest, who pushed it, signature, labels, serving hints, "
        "metrics, and its latest evaluation with the gates it passed or failed. "
        "Needs an admin API key.",
    )
    parser.add_argument("reference", metavar="NAME[:VERSION]", help="e.g. digits-sklearn or digits-sklearn:2")
    add_gateway_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    reference = Reference.parse(args.reference, version_required=False)
    path = reference.version_path if reference.version else reference.model_path
    with connect(args) as client:
        document: dict[str, Any] = client.get_json(path)
    console = table_console()
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    elif reference.version:
        _show_version(console, document)
    else:
        console.print(versions_table([document]))
    return 0


def _show_version(console: Console, record: dict[str, Any]) -> None:
    manifest = record["manifest"]
    role = record.get("role") or ("deleted" if record["state"] == "retired" else record["state"])
    console.print(f"[bold]{escape(record['name'])}[/] version {record['version']} ({role})")
    for table in (_overview(record, manifest), _signature(manifest)):
        console.print(table)
    evaluations = record.get("evaluations") or []
    if evaluations:
        latest = evaluations[0]
        console.print(evaluation_table(latest))
        console.print(
            f"{verdict_line(latest)} ({latest['at'][:19].replace('T', ' ')} by {latest['by']}; "
            f"{len(evaluations)} evaluation(s) recorded)",
            highlight=False,
            markup=False,
        )


def _overview(record: dict[str, Any], manifest: dict[str, Any]) -> Table:
    serving = manifest["serving"]
    labels = manifest.get("labels")
    rows = [
        ("package version", record["package_version"]),
        ("digest", f"sha256:{record['digest']} ({record['size']} bytes)"),
        ("pushed", f"{record['pushed_at']} by {record['pushed_by']}"),
        ("deleted", f"{record['retired_at']} by {record['retired_by']}" if record["retired_at"] else "-"),
        ("description", manifest["description"] or "-"),
        ("framework", f"{manifest['framework']['name']} {manifest['framework']['version']}"),
        ("labels", f"{labels['output']}: {', '.join(labels['names'][:12])}" if labels else "-"),
        ("metrics", ", ".join(f"{k}={v:g}" for k, v in sorted(manifest["metrics"].items())) or "-"),
        (
            "serving",
            f"max batch {serving['max_batch_size']}, {serving['instances']} instance(s), "
            f"device {serving['device']}",
        ),
    ]
    table = Table(show_header=False, box=box.SIMPLE)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    return table


def _signature(manifest: dict[str, Any]) -> Table:
    table = Table(title="Signature", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("", "name", "datatype", "shape"):
        table.add_column(column)
    for kind in ("inputs", "outputs"):
        for spec in manifest["signature"][kind]:
            table.add_row(kind[:-1], escape(spec["name"]), spec["datatype"], str(spec["shape"]))
    return table
