"""``mdeploy push``: upload a package to a gateway, which verifies, stores and deploys it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID

from core.errors import InvalidInput
from core.gates import METRICS
from mdeploy.cli.evaluation_set import checked_gates, eval_payload, evaluation_table, verdict_line
from mdeploy.cli.output import table_console
from mdeploy.cli.registry_client import (
    MODELS_PATH,
    PACKAGES_PATH,
    add_gateway_arguments,
    connect,
    transfer_progress,
)
from modelpkg import read_package

CHUNK = 1024 * 1024
EXIT_GATES_FAILED = 1
"""A gated push whose gates failed: the version stays staged and a CI job stops."""
DESCRIPTION = """\
Upload PACKAGE to the gateway. The gateway checks it completely (archive, hashes, ONNX,
samples), stores it under its sha256, loads it on every inference server and makes it a
new version of the model it names. Pushing a package that is loaded already changes nothing.

The model's first version goes live. A later version is staged: it answers requests that name
it, and can be an arm of a rollout, but requests that name no version still get the live one
until it is promoted (mdeploy promote, a rollout, or --promote here).

With --eval (and --labels, --gate), the gateway then runs the evaluation set through the
serving path against the new version (and the live one, for agreement), records the results
on the version and promotes it only when every gate passes. Otherwise it stays staged, the
reasons are printed and the exit status is 1, so a CI job stops. A model's default gates
(mdeploy gates set) judge every push the same way.
Needs an API key with the admin scope.

  mdeploy push model.pkg --eval eval.npz --labels y.npy \\
      --gate 'accuracy>=0.95' --gate 'agreement>=0.98' --gate 'p99_ms<=20'
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
        "--promote",
        action="store_true",
        help="make the new version live (with gates: only if every gate passes; rollback undoes it)",
    )
    parser.add_argument("--eval", type=Path, metavar="DATA", help="evaluation set: .npz of inputs by name")
    parser.add_argument("--labels", type=Path, metavar="Y", help="labels for --eval: .npy, one per row")
    parser.add_argument(
        "--gate",
        action="append",
        metavar="COND",
        help=f"e.g. 'accuracy>=0.95'; repeat for several. Metrics: {', '.join(METRICS)}",
    )
    parser.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.package
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file (give the package file, e.g. model.pkg)")
    gates = checked_gates(args.gate)
    if (gates or args.labels) and args.eval is None:
        raise InvalidInput("--gate and --labels need an evaluation set: add --eval eval.npz")
    payload = None
    if args.eval is not None:
        inputs = [spec.name for spec in read_package(path).manifest.signature.inputs]
        payload = eval_payload(args.eval, args.labels, inputs)
    size = path.stat().st_size
    timeout = httpx.Timeout(args.timeout, connect=5.0)
    # Gated: push staged, then the evaluation promotes only if every gate passes.
    promote_now = args.promote and payload is None
    with connect(args, timeout) as client:
        with transfer_progress(Console(stderr=True)) as progress:
            task = progress.add_task(f"uploading {escape(path.name)}", total=size)
            response = client.request(
                "POST",
                PACKAGES_PATH,
                params={"promote": "true"} if promote_now else None,
                content=_chunks(path, progress, task),
                # A declared length lets the gateway refuse an oversized package before it arrives.
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
        answer = response.json()
        evaluation = answer.get("evaluation")
        if payload is not None:
            params = [("gate", gate) for gate in gates] + [
                ("promote", str(args.promote or bool(gates)).lower())
            ]
            evaluation = client.request(
                "POST",
                f"{MODELS_PATH}/{quote(answer['name'], safe='')}/versions/{answer['version']}/evaluations",
                params=params,
                content=payload,
                headers={"Content-Type": "application/octet-stream"},
            ).json()
            answer["evaluation"] = evaluation
    _report(answer, args.json)
    return EXIT_GATES_FAILED if evaluation is not None and evaluation["passed"] is False else 0


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
    evaluation = answer.get("evaluation")
    if evaluation is not None:
        table_console().print(evaluation_table(evaluation))
        print(("✓ " if evaluation["passed"] is not False else "✗ ") + verdict_line(evaluation))
