"""``mdeploy delete NAME[:VERSION]``: retire a version, or every version of a model.

A version in a rollout (canary, shadow or bandit arm, or the stable one) is refused: roll out
or roll back without it first. The default version, which requests naming no version get,
needs ``--force``, and so does a whole model. Deleted versions stay in the package store:
``mdeploy pull`` still fetches them and pushing the package again restores the version.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import urlencode

from core.errors import InvalidInput
from mdeploy.cli.registry_client import Reference, RegistryClient, add_gateway_arguments, connect


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "delete",
        help="retire a model version, or every version of a model",
        description="Retire NAME:VERSION, or with NAME alone every live version of the model. A "
        "version that a rollout uses is refused; the default version (the one requests naming no "
        "version get) and a whole model need --force. The packages stay stored: pushing one again "
        "restores its version. Needs an admin API key.",
    )
    parser.add_argument(
        "reference", metavar="NAME[:VERSION]", help="e.g. digits-sklearn:2; NAME alone: the whole model"
    )
    parser.add_argument(
        "--force", action="store_true", help="also delete the default version (and so a whole model)"
    )
    parser.add_argument("--reason", default="", help="why (kept in the audit log)")
    parser.add_argument("--json", action="store_true", help="print the deleted versions as JSON")
    add_gateway_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    reference = Reference.parse(args.reference, version_required=False)
    with connect(args) as client:
        versions = [reference.version] if reference.version else _whole_model(client, reference, args.force)
        deleted = [_delete(client, Reference(reference.name, v), args.force, args.reason) for v in versions]
    if args.json:
        print(json.dumps(deleted, indent=2, sort_keys=True))
    for record in [] if args.json else deleted:
        print(f"✓ deleted {reference.name}:{record['version']} (its package stays stored)")
    return 0


def _whole_model(client: RegistryClient, reference: Reference, force: bool) -> list[str]:
    """The model's loaded versions, the ones that serve last (the staged ones take no unversioned
    traffic, so deleting them first moves nothing)."""
    model = client.get_json(reference.model_path)
    live = [v["version"] for v in model["versions"] if v["state"] == "live"]
    if not live:
        raise InvalidInput(f"model '{reference.name}' has no live version to delete")
    if not force:
        raise InvalidInput(
            f"deleting model '{reference.name}' stops serving it (live versions: {', '.join(live)}); "
            "pass --force to delete them all"
        )
    serving = {v["version"] for v in model["versions"] if v.get("role") not in (None, "staged")}
    return sorted((v for v in live if v not in serving), key=int) + sorted(
        (v for v in live if v in serving), key=int
    )


def _delete(client: RegistryClient, version: Reference, force: bool, reason: str) -> dict[str, Any]:
    query = urlencode({"force": str(force).lower(), "reason": reason})
    answer: dict[str, Any] = client.delete_json(f"{version.version_path}?{query}")
    return answer
