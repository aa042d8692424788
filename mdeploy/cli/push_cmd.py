"""``mdeploy push``: upload a package to a gateway, which verifies, stores and deploys it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID

from core.errors import InvalidInput
from mdeploy.cli.registry_client import PACKAGES_PATH, add_gateway_arguments, connect, transfer_progress

CHUNK = 1024 * 1024
DESCRIPTION = """\
Upload PACKAGE to the gateway. The gateway checks it completely (archive, hashes, ONNX,
samples), stores it under its sha256, loads it on every inference server and makes it a
new version of the model it names. Pushing a package that is loaded already changes nothing.

The model's first version goes live. A later version is staged: it answers requests that name
it, and can be an arm of a rollout, but requests that name no version still get the live one
until it is promoted (mdeploy promote, a rollout, or --promote here).
Needs an API key with the admin scope.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload a package to a gateway and deploy it as a new model version",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("package", metavar="PACKAGE", type=Path, help="a model.pkg file")
    add_gateway_arguments(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for the gateway to verify and deploy (default 600)",
    )
    parser.add_argument(
        "--promote", action="store_true", help="make the new version live at once (rollback undoes it)"
    )
    parser.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.package
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file (give the package file, e.g. model.pkg)")
    size = path.stat().st_size
    timeout = httpx.Timeout(args.timeout, connect=5.0)
    with connect(args, timeout) as client, transfer_progress(Console(stderr=True)) as progress:
        task = progress.add_task(f"uploading {escape(path.name)}", total=size)
        response = client.request(
            "POST",
            PACKAGES_PATH,
            params={"promote": "true"} if args.promote else None,
            content=_chunks(path, progress, task),
            # A declared length lets the gateway refuse an oversized package before it arrives.
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
    _report(response.json(), args.json)
    return 0


def _chunks(path: Path, progress: Progress, task: TaskID) -> Iterator[bytes]:
    """The file in chunks, advancing the bar; then a spinner while the gateway works."""
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            progress.advance(task, len(chunk))
            yield chunk
    progress.update(task, description="the gateway is verifying and deploying")


def _report(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return
    mark = "=" if answer.get("status") == "unchanged" else "✓"
    print(f"{mark} {answer['message']}")
    print(f"  {answer['name']}:{answer['version']} ({answer['role']})  sha256:{answer['digest']}")
