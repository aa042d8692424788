"""``mdeploy list``: the models a gateway serves, one line per version."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from mdeploy.cli.output import table_console
from mdeploy.cli.registry_client import MODELS_PATH, add_gateway_arguments, connect


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "list",
        help="list the models and versions a gateway serves",
        description="List every model with a loaded version, one line per version, with its role: "
        "live (* : requests that name no version get it), stable or candidate (arms of a rollout, "
        "with their share), shadow, or staged (answers only requests that name it). Needs an admin "
        "API key.",
    )
    add_gateway_arguments(parser)
    parser.add_argument("--all", action="store_true", help="include deleted versions")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        models: list[dict[str, Any]] = client.get_json(MODELS_PATH, params={"all": str(args.all).lower()})[
            "models"
        ]
    if args.json:
        print(json.dumps(models, indent=2, sort_keys=True))
    elif not models:
        print("no models yet; push one with: mdeploy push model.pkg")
    else:
        table_console().print(versions_table(models))
    return 0


def versions_table(models: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("model", "version", "package version", "serves", "pushed", "by", "digest"):
        table.add_column(column)
    for model in models:
        shares = {arm["version"]: arm["share"] for arm in (model.get("serving") or {}).get("arms", [])}
        for version in model["versions"]:
            role = version.get("role")
            live = role == "live"
            table.add_row(
                escape(model["name"]),
                f"{version['version']}{' *' if live else ''}",
                escape(version["package_version"]),
                role_text(role, shares.get(version["version"]), version["state"]),
                (version["pushed_at"] or "")[:19].replace("T", " "),
                escape(version["pushed_by"]),
                f"{version['digest'][:12]}",
            )
    return table


def role_text(role: str | None, share: float | None, state: str) -> str:
    """``live``, ``candidate 10%``, ``shadow (copies 50%)``, ``staged`` or ``deleted``."""
    if role is None:
        return "deleted" if state == "retired" else state
    if role in ("stable", "candidate"):
        return f"{role} {share:.0%}" if share is not None else role
    if role == "shadow":
        return f"shadow (copies {share:.0%})" if share is not None else role
    return role
