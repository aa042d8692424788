"""``mdeploy logs enable | disable | status | export NAME``: a model's prediction log for retraining."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from core.errors import InvalidInput
from mdeploy.cli.registry_client import MODELS_PATH, add_gateway_arguments, connect

DESCRIPTION = """\
A model's prediction log keeps a sample of its answered requests (inputs, outputs, version,
request id, time, and the reward when feedback arrives) as Parquet files in the gateway's data
folder (prediction-logs/NAME/), under a size cap: the oldest files are deleted first. It is off
until enabled, and inputs may be personal data: `disable --purge` deletes the files.

  mdeploy logs enable digits --sample 0.1 --max-mb 1024
  mdeploy logs export digits --since 1h -o digits.parquet
"""
EXPORT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
MiB = 2**20


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "logs",
        help="log a model's requests for retraining; export them as Parquet",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    enable = commands.add_parser("enable", help="start logging NAME's requests, or change how")
    _common(enable)
    enable.add_argument(
        "--sample", type=float, metavar="RATE", help="share of requests logged, in (0, 1] (default 1)"
    )
    enable.add_argument(
        "--max-mb", type=int, metavar="MIB", help="cap of NAME's log files, 1 to 102400 MiB (default 1024)"
    )
    enable.set_defaults(handler=run_enable)
    disable = commands.add_parser("disable", help="stop logging NAME's requests")
    _common(disable)
    disable.add_argument("--purge", action="store_true", help="delete NAME's log files too")
    disable.set_defaults(handler=run_disable)
    status = commands.add_parser("status", help="whether NAME is logged, and what its files hold")
    _common(status)
    status.set_defaults(handler=run_status)
    export = commands.add_parser("export", help="write NAME's logged rows of a time range to a Parquet file")
    export.add_argument("model", metavar="NAME", help="the model's name, as `mdeploy list` shows it")
    export.add_argument("--since", required=True, metavar="DURATION", help="how far back: 30s, 15m, 1h, 2d")
    export.add_argument("--until", metavar="DURATION", help="how far back the rows end (default: now)")
    export.add_argument("-o", "--output", type=Path, help="the file to write (default NAME.parquet)")
    export.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    add_gateway_arguments(export)
    export.set_defaults(handler=run_export)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME", help="the model's name, as `mdeploy list` shows it")
    add_gateway_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON")


def _path(model: str) -> str:
    return f"{MODELS_PATH}/{quote(model, safe='')}/logs"


def seconds(text: str, option: str) -> float:
    """``30s``, ``15m``, ``1h``, ``2d`` (or a plain number of seconds) in seconds."""
    matched = _DURATION.fullmatch(text.strip())
    if matched is None:
        raise InvalidInput(f"{option} is a number and a unit (s, m, h or d), such as 15m or 2d, not {text!r}")
    return float(matched.group(1)) * _UNITS[matched.group(2)]


def run_enable(args: argparse.Namespace) -> int:
    body = {
        **({"sample_rate": args.sample} if args.sample is not None else {}),
        **({"max_mb": args.max_mb} if args.max_mb is not None else {}),
    }
    with connect(args) as client:
        status = client.request("PUT", _path(args.model), json=body).json()
    return _show(args, status)


def run_disable(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.delete_json(_path(args.model), params={"purge": str(args.purge).lower()})
    return _show(args, status)


def run_status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        return _show(args, client.get_json(_path(args.model)))


def run_export(args: argparse.Namespace) -> int:
    since = seconds(args.since, "--since")
    until = seconds(args.until, "--until") if args.until else 0.0
    if since <= until:
        raise InvalidInput(f"--since ({args.since}) must reach further back than --until ({args.until})")
    target: Path = args.output or Path(f"{args.model}.parquet")
    if target.exists() and not args.force:
        raise InvalidInput(f"{target} exists; pass --force to overwrite it or -o to write elsewhere")
    query = urlencode({"since": str(since), **({"until": str(until)} if until else {})})
    partial = target.with_name(f".{target.name}.part")
    try:
        with (
            connect(args, EXPORT_TIMEOUT) as client,
            client.stream(f"{_path(args.model)}/export?{query}") as answer,
        ):
            rows = answer.headers.get("x-mdeploy-rows", "?")
            rewarded = answer.headers.get("x-mdeploy-rewarded", "?")
            with partial.open("wb") as file:
                for chunk in answer.iter_bytes(MiB):
                    file.write(chunk)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    span = f"from {args.since} ago" + (f" to {args.until} ago" if args.until else " to now")
    print(f"✓ {rows} rows ({rewarded} with a reward) {span} → {target}")
    return 0


def _show(args: argparse.Namespace, status: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    for line in status_lines(status):
        print(line)
    return 0


def status_lines(status: dict[str, Any]) -> list[str]:
    model = status["model"]
    if status["enabled"]:
        setter = f"set {_when(status['updated_at'])} by {status['updated_by']}"
        head = (
            f"{model}: logging {status['sample_rate'] * 100:.4g}% of answered requests, "
            f"files capped at {status['max_mb']} MiB ({setter})"
        )
    else:
        head = f"{model}: not logging (start with: mdeploy logs enable {model})"
    if not status["files"]:
        return [head, "  no log files"]
    span = f"{_when(status['oldest'])} to {_when(status['newest'])} UTC" if status["oldest"] else "no rows"
    return [
        head,
        f"  {_count(status['files'], 'file')}, {_size(status['bytes'])}: {status['rows']:,} rows "
        f"and {status['rewards']:,} rewards, {span}",
        f"  in the gateway's data folder: prediction-logs/{model}/",
    ]


def _count(number: int, thing: str) -> str:
    return f"{number:,} {thing}{'' if number == 1 else 's'}"


def _size(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size / 1024:.1f} KiB"


def _when(stamp: str | None) -> str:
    return stamp[:19].replace("T", " ") if stamp else "?"
