"""``mdeploy drift NAME``: which features of a version's live traffic moved from its reference."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from rich import box
from rich.markup import escape
from rich.table import Table

from mdeploy.cli.output import table_console
from mdeploy.cli.registry_client import add_gateway_arguments, connect

BARS = " ▁▂▃▄▅▆▇█"
SHOWN = 20


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "drift",
        help="how far a version's live inputs and outputs moved from its reference profile",
        description="Compare a version's live traffic in a window (5m, 1h or 24h) with the reference "
        "profile its package carries: per feature the PSI and the KS statistic, most drifted first, "
        "each with a small histogram of the reference and the live values over the reference's deciles; "
        "the predicted classes' Jensen-Shannon distance; the version's score (mean PSI) and the share "
        "of drifted features. Needs an admin API key.",
    )
    parser.add_argument("model", metavar="NAME", help="the model's name, as `mdeploy list` shows it")
    parser.add_argument("--version", help="a version number (default: the one requests naming none get)")
    parser.add_argument("--window", choices=["5m", "1h", "24h"], default="1h", help="default 1h")
    add_gateway_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    params = {"window": args.window, **({"version": args.version} if args.version else {})}
    with connect(args) as client:
        report: dict[str, Any] = client.get_json(
            f"/v1/models/{quote(args.model, safe='')}/drift", params=params
        )
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    console = table_console()
    console.print(summary_line(report), highlight=False, markup=False)
    if report["features"]:
        console.print(features_table(report["features"][:SHOWN]))
        hidden = len(report["features"]) - SHOWN
        if hidden > 0:
            console.print(f"... and {hidden} more features (--json shows all)", highlight=False)
    return 0


def summary_line(report: dict[str, Any]) -> str:
    head = f"{report['model']}:{report['version']}, last {report['window']}: "
    status = report["status"]
    if status == "no reference":
        return head + "no reference profile in its package (package it with --reference to watch drift)"
    reference = f"reference {report['reference_rows']} rows ({report['reference_source']})"
    if status == "no traffic":
        return head + f"no sampled traffic yet; {reference}"
    parts = [
        f"{status.upper()}: score {report['score']:.3f} (mean PSI)",
        f"{report['drifted_share']:.0%} of features drifted",
        f"{report['rows']} live rows",
        reference,
    ]
    if report["classes_js"] is not None:
        parts.append(f"classes JS {report['classes_js']:.3f}")
    return head + ", ".join(parts)


def spark(shares: list[float]) -> str:
    top = max(shares) or 1.0
    return "".join(BARS[round(share / top * (len(BARS) - 1))] for share in shares)


def features_table(features: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("feature", "side", "PSI", "KS", "", "reference", "live"):
        table.add_column(column, justify="right" if column in ("PSI", "KS") else "left")
    for feature in features:
        table.add_row(
            escape(feature["name"]),
            feature["side"],
            f"{feature['psi']:.3f}",
            f"{feature['ks']:.3f}",
            "DRIFT" if feature["drifted"] else "",
            spark(feature["reference_shares"]),
            spark(feature["live_shares"]),
        )
    return table
