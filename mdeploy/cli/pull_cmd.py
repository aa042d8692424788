"""``mdeploy pull NAME[:VERSION]``: download a version's package (the live one by default),
byte for byte, checked by digest."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from core.errors import InvalidInput, MdeployError
from mdeploy.cli.registry_client import (
    Reference,
    RegistryClient,
    add_gateway_arguments,
    connect,
    transfer_progress,
)

CHUNK = 1024 * 1024


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pull",
        help="download a model version's package",
        description="Download the package of NAME:VERSION (deleted versions too), or of NAME's live "
        "version, and check it against its sha256. Needs an admin API key.",
    )
    parser.add_argument(
        "reference",
        metavar="NAME[:VERSION]",
        help="e.g. digits-sklearn:2; NAME alone: the live version",
    )
    parser.add_argument("-o", "--output", type=Path, help="the file to write (default NAME-VERSION.pkg)")
    parser.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    add_gateway_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    named = Reference.parse(args.reference, version_required=False)
    with connect(args) as client:
        reference = named if named.version else _live(client, named)
        target: Path = args.output or Path(f"{reference.name}-{reference.version}.pkg")
        if target.exists() and not args.force:
            raise InvalidInput(f"{target} exists; pass --force to overwrite it or -o to write elsewhere")
        partial = target.with_name(f".{target.name}.part")
        try:
            digest = _download(client, reference, partial)
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    print(f"✓ {reference} → {target} (sha256:{digest})")
    return 0


def _live(client: RegistryClient, named: Reference) -> Reference:
    """NAME's version that requests naming no version get (a rollout's stable version)."""
    serving = client.get_json(named.model_path).get("serving")
    if serving is None:
        raise InvalidInput(f"model '{named.name}' has no loaded version; name one: {named.name}:VERSION")
    return Reference(named.name, str(serving["live_version"] or serving["stable"]))


def _download(client: RegistryClient, reference: Reference, partial: Path) -> str:
    """Stream the package into ``partial`` with a progress bar; return its checked sha256."""
    sha256 = hashlib.sha256()
    with client.stream(f"{reference.version_path}/package") as response, partial.open("wb") as file:
        expected: str = response.headers.get("x-package-digest", "")
        total = int(response.headers.get("content-length", 0)) or None
        with transfer_progress(Console(stderr=True)) as progress:
            task = progress.add_task(f"downloading {escape(str(reference))}", total=total)
            for chunk in response.iter_bytes(CHUNK):
                sha256.update(chunk)
                file.write(chunk)
                progress.advance(task, len(chunk))
    if sha256.hexdigest() != expected:
        raise MdeployError(
            f"the download of {reference} is corrupt: its sha256 is {sha256.hexdigest()}, "
            f"the gateway says {expected or '(nothing)'}; try again"
        )
    return expected
