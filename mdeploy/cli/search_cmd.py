"""``mdeploy search TEXT``: models and versions whose manifests match, as a key may see them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from core.errors import InvalidInput
from mdeploy.cli.output import table_console
from mdeploy.cli.registry_client import add_gateway_arguments, connect

SERVING_MODELS_PATH = "/v1/models"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "search",
        help="find models by name, description, tag, framework, tensor or data hash",
        description="Search the gateway's loaded versions: every word of TEXT must appear in a name, "
        "description, tag, framework, signature tensor name or shape, or provenance (data file names "
        "and hashes, code commit, parent). Answers the matching versions, what each serves as, and a "
        "one-line summary; only models the API key may use. Needs the predict scope.",
    )
    parser.add_argument(
        "text", metavar="TEXT", nargs="?", default="", help="words to find, e.g. 'digits demo'"
    )
    parser.add_argument("--framework", help="only this framework: keras, savedmodel, sklearn, onnx")
    parser.add_argument("--input", metavar="NAME", help="only models with an input tensor of this name")
    parser.add_argument(
        "--data-sha256", metavar="HASH", help="only models trained on a file with this sha256 (prefix)"
    )
    add_gateway_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    params = {
        "q": args.text,
        "framework": args.framework,
        "input": args.input,
        "data_sha256": args.data_sha256,
    }
    given = {name: value for name, value in params.items() if value}
    if not given:
        raise InvalidInput("give TEXT to search for, or --framework, --input or --data-sha256")
    with connect(args) as client:
        models: list[dict[str, Any]] = client.get_json(SERVING_MODELS_PATH, params=given)["models"]
    if args.json:
        print(json.dumps(models, indent=2, sort_keys=True))
        return 0
    if not models:
        print("no model matches")
        return 0
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("model", "version", "serves", "summary", "matched in"):
        table.add_column(column, overflow="fold")
    for model in models:
        for match in model["matches"]:
            table.add_row(
                escape(model["name"]),
                match["version"],
                match["role"] or "-",
                escape(match["summary"]),
                ", ".join(match["matched"]),
            )
    table_console().print(table)
    return 0
