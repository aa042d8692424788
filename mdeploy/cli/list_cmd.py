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
        description="List every model with a live version, one line per version; * marks the default "
        "version (the one requests without a version get). Needs an admin API key.",
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
    for column in ("model", "version", "package version", "state", "pushed", "by", "digest"):
        table.add_column(column)
    for model in models:
        for version in model["versions"]:
            default = version["version"] == model["default_version"]
            table.add_row(
                escape(model["name"]),
                f"{version['version']}{' *' if default else ''}",
                escape(version["package_version"]),
                version["state"],
                (version["pushed_at"] or "")[:19].replace("T", " "),
                escape(version["pushed_by"]),
                f"{version['digest'][:12]}",
            )
    return table
