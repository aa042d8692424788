"""``mdeploy gates set | show | clear NAME``: a model's default release gates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from core.errors import InvalidInput
from core.gates import METRICS
from mdeploy.cli.evaluation_set import checked_gates, eval_payload
from mdeploy.cli.registry_client import MODELS_PATH, RegistryClient, add_gateway_arguments, connect
from mdeploy.client import ClientError

DESCRIPTION = """\
Default gates judge every later push of NAME: the gateway keeps the evaluation set, runs it
through the serving path against each new version (and the live one, for agreement), records
the results on the version, and with --auto-promote makes it live when every gate passes.
A push whose gates fail stays staged and `mdeploy push` exits with status 1.

  mdeploy gates set digits --eval eval.npz --labels y.npy --gate 'accuracy>=0.95' --auto-promote
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gates",
        help="set, show or clear a model's default release gates",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    set_parser = commands.add_parser("set", help="gates and the evaluation set that every push must pass")
    _common(set_parser)
    set_parser.add_argument("--eval", type=Path, required=True, metavar="DATA", help=".npz of inputs by name")
    set_parser.add_argument("--labels", type=Path, metavar="Y", help=".npy of labels, one per row")
    set_parser.add_argument(
        "--gate",
        action="append",
        required=True,
        metavar="COND",
        help=f"e.g. 'accuracy>=0.95'; repeat for several. Metrics: {', '.join(METRICS)}",
    )
    set_parser.add_argument("--auto-promote", action="store_true", help="a push that passes goes live")
    set_parser.set_defaults(handler=run_set)
    show = commands.add_parser("show", help="the model's default gates")
    _common(show)
    show.set_defaults(handler=run_show)
    clear = commands.add_parser("clear", help="remove the model's default gates")
    _common(clear)
    clear.set_defaults(handler=run_clear)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME", help="the model's name, as `mdeploy list` shows it")
    add_gateway_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON")


def _path(model: str) -> str:
    return f"{MODELS_PATH}/{quote(model, safe='')}/gates"


def _input_names(client: RegistryClient, model: str) -> list[str] | None:
    """The model's input names, so a one-array .npy can be sent (None if the key cannot read them)."""
    try:
        metadata = client.get_json(f"/v2/models/{quote(model, safe='')}")
    except ClientError:
        return None
    return [tensor["name"] for tensor in metadata["inputs"]]


def run_set(args: argparse.Namespace) -> int:
    gates = checked_gates(args.gate)
    if not gates:
        raise InvalidInput("give at least one --gate, e.g. --gate 'accuracy>=0.95'")
    with connect(args) as client:
        payload = eval_payload(args.eval, args.labels, _input_names(client, args.model))
        params = [("gate", gate) for gate in gates] + [("auto_promote", str(args.auto_promote).lower())]
        config = client.request(
            "PUT",
            _path(args.model),
            params=params,
            content=payload,
            headers={"Content-Type": "application/octet-stream"},
        ).json()
    return _show(args, config)


def run_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        return _show(args, client.get_json(_path(args.model)))


def run_clear(args: argparse.Namespace) -> int:
    with connect(args) as client:
        answer = client.delete_json(_path(args.model))
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        print(f"✓ {args.model} has no default gates now")
    return 0


def _show(args: argparse.Namespace, config: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(config, indent=2, sort_keys=True))
        return 0
    promote = "a push that passes goes live" if config["auto_promote"] else "a push that passes stays staged"
    print(f"{config['model']}: {', '.join(config['gates'])} ({promote})")
    print(f"  evaluation set sha256:{config['data_sha256']} ({config['rows']} rows)")
    print(f"  set {config['updated_at'][:19].replace('T', ' ')} by {config['updated_by']}")
    return 0
