"""``mdeploy predict NAME[:VERSION] --json BODY``: one prediction through the gateway."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.errors import InvalidInput

_MAX_BODY_FILE = 64 * 1024 * 1024


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="send one prediction request",
        description="POST a TF-Serving body ({'instances': ...} or {'inputs': {...}}) to "
        "/v1/models/NAME:predict, or a KServe v2 body ({'inputs': [tensors]}) to /v2/models/NAME/infer, "
        "and print the JSON answer.",
    )
    parser.add_argument("model", metavar="NAME[:VERSION]", help="model, optionally with a version")
    parser.add_argument("--json", required=True, metavar="BODY", help="the request body, or @FILE to read it")
    parser.add_argument("--labels", action="store_true", help="v1 only: add the top label of each row")
    parser.add_argument("--gateway", metavar="URL", help="gateway URL (MDEPLOY_GATEWAY)")
    parser.add_argument("--api-key", metavar="KEY", help="a key with the predict scope (MDEPLOY_API_KEY)")
    parser.set_defaults(handler=run)


def _body(text: str) -> Any:
    if text.startswith("@"):
        path = Path(text[1:])
        if path.stat().st_size > _MAX_BODY_FILE:
            raise InvalidInput(f"{path} is over {_MAX_BODY_FILE} bytes")
        text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"--json is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidInput("--json nests too deeply; a prediction body is a few levels deep") from None


def endpoint(model: str, body: Any, labels: bool) -> str:
    """The route for a model spec and a body: v2 when inputs are a list of named tensors, else v1."""
    name, _, version = model.partition(":")
    if not name or "/" in name or (version and not version.isdigit()):
        raise InvalidInput(f"model must be NAME or NAME:VERSION with a numeric version, not {model!r}")
    if not isinstance(body, dict):
        raise InvalidInput("--json must be a JSON object")
    versioned = f"{name}/versions/{version}" if version else name
    if isinstance(body.get("inputs"), list) and all(
        isinstance(t, dict) and "datatype" in t for t in body["inputs"]
    ):
        return f"/v2/models/{versioned}/infer"
    return f"/v1/models/{versioned}:predict" + ("?labels=true" if labels else "")


def run(args: argparse.Namespace) -> int:
    from mdeploy.client import ClientConfig, GatewayClient

    body = _body(args.json)
    path = endpoint(args.model, body, args.labels)
    with GatewayClient(ClientConfig.resolve(args.gateway, args.api_key)) as client:
        answer = client.post_json(path, body)
    json.dump(answer, sys.stdout, indent=2)
    print()
    return 0
