"""``mdeploy drift NAME``: which features of a version's live traffic moved from its reference;
with ``--alert``, the model's drift thresholds (an audit event and a signed webhook when crossed)."""

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
from mdeploy.client import ClientError

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
        "of drifted features. Needs an admin API key. With --alert, set the model's drift alert instead: "
        "when a version's window holds at least --min-rows rows and a condition holds, the gateway writes "
        "an audit event (drift-alert; drift-recovered when none holds again) and POSTs a signed JSON "
        "event to --webhook.",
    )
    parser.add_argument("model", metavar="NAME", help="the model's name, as `mdeploy list` shows it")
    parser.add_argument("--version", help="a version number (default: the one requests naming none get)")
    parser.add_argument(
        "--window",
        help="the gateway's drift windows: 5m, 1h or 24h unless it is set up otherwise; default 1h",
    )
    alerts = parser.add_argument_group("alert")
    alerts.add_argument(
        "--alert",
        metavar="WHEN",
        help="conditions, any of which fires: psi>0.2 (a feature's PSI), ks>0.1, score>0.1 (mean PSI), "
        "share>0.3 (share of drifted features), js>0.2 (classes); several with commas",
    )
    alerts.add_argument(
        "--min-rows", type=int, default=500, help="live rows a window needs before it can alert (default 500)"
    )
    alerts.add_argument("--webhook", metavar="URL", help="http(s) URL that gets a signed POST on each change")
    alerts.add_argument("--no-alert", action="store_true", help="remove the model's drift alert")
    add_gateway_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.alert is not None or args.no_alert:
        return set_alert(args)
    params = {
        **({"window": args.window} if args.window else {}),
        **({"version": args.version} if args.version else {}),
    }
    with connect(args) as client:
        report: dict[str, Any] = client.get_json(
            f"/v1/models/{quote(args.model, safe='')}/drift", params=params
        )
        alert = _alert(client, args.model)
    if args.json:
        print(json.dumps({**report, "alert": alert}, indent=2, sort_keys=True))
        return 0
    console = table_console()
    console.print(summary_line(report), highlight=False, markup=False)
    if alert is not None:
        console.print(alert_line(alert, report["version"]), highlight=False, markup=False)
    if report["features"]:
        console.print(features_table(report["features"][:SHOWN]))
        hidden = len(report["features"]) - SHOWN
        if hidden > 0:
            console.print(f"... and {hidden} more features (--json shows all)", highlight=False)
    return 0


def _alert_path(model: str) -> str:
    return f"/v1/admin/models/{quote(model, safe='')}/drift/alert"


def _alert(client: Any, model: str) -> dict[str, Any] | None:
    try:
        answer: dict[str, Any] = client.get_json(_alert_path(model))
    except ClientError as error:
        if error.status == 404:
            return None
        raise
    return answer


def set_alert(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.no_alert:
            client.delete_json(_alert_path(args.model))
            print(f"{args.model}: drift alert removed")
            return 0
        body = {"when": args.alert, "min_rows": args.min_rows, "window": args.window, "webhook": args.webhook}
        answer: dict[str, Any] = client.request("PUT", _alert_path(args.model), json=body).json()
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    rule = answer["rule"]
    target = f"; webhook {rule['webhook']}" if rule["webhook"] else ""
    print(
        f"{args.model}: drift alert when {rule['when']} over the last {rule['window']} "
        f"(at least {rule['min_rows']} live rows){target}"
    )
    return 0


def alert_line(alert: dict[str, Any], version: str) -> str:
    rule = alert["rule"]
    states = {state["version"]: state for state in alert["versions"]}
    state = states.get(version)
    now = f"{state['state'].upper()} since {state['since']}" if state else "not judged yet"
    return f"alert: {rule['when']} over {rule['window']}, min {rule['min_rows']} rows: {now}"


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
