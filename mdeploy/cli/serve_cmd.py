"""``mdeploy serve``: gateway + local inference server with embedded defaults."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.errors import InvalidInput


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gateway and a local inference server",
        description="Run the gateway (HTTP and gRPC APIs) and a local mdeploy-server on this "
        "machine. Every gateway setting can also be given as an MDEPLOY_<NAME> environment variable "
        "(MDEPLOY_MAX_BODY_BYTES, MDEPLOY_RATE_LIMIT_PREDICT...) or in a JSON/TOML file named by "
        "MDEPLOY_SETTINGS_FILE; the local server reads MDEPLOY_SERVER_<NAME> "
        "(MDEPLOY_SERVER_DEVICE=cuda:0). README 'The JSON API' lists them.",
    )
    parser.add_argument("--data-dir", type=Path, help="registry, packages and keys (default .mdeploy)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port of the HTTP API (default 8000)")
    parser.add_argument(
        "--grpc-port", type=int, help="port of the gRPC API, KServe v2 / Triton (default 8001; 0: none)"
    )
    parser.add_argument(
        "--backend",
        action="append",
        dest="backends",
        metavar="HOST:PORT",
        help="use these inference servers instead of starting one (repeatable)",
    )
    parser.add_argument(
        "--tls-cert", dest="tls_cert_file", type=Path, help="PEM certificate: serve HTTPS and gRPC over TLS"
    )
    parser.add_argument("--tls-key", dest="tls_key_file", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--backend-tls-ca", dest="backend_tls_ca_file", type=Path, help="CA of grpcs:// inference servers"
    )
    parser.add_argument(
        "--backend-tls-cert",
        dest="backend_tls_cert_file",
        type=Path,
        help="client certificate for grpcs:// servers that want one (mutual TLS)",
    )
    parser.add_argument(
        "--backend-tls-key", dest="backend_tls_key_file", type=Path, help="key of --backend-tls-cert"
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        type=_workers,
        help="gateway processes on the same ports (default 1; auto: one per core); more than one "
        "needs MDEPLOY_RATE_LIMIT_STORAGE=redis://... (README 'Gateway workers')",
    )
    parser.add_argument("--demo", action="store_true", help="build and push the digits demo models")
    parser.set_defaults(handler=run)


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isdecimal() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is neither a number of processes (1 or more) nor 'auto'")


def run(args: argparse.Namespace) -> int:
    from gateway.local import serve
    from gateway.settings import GatewaySettings
    from mdeploy.demo import demo_step

    wanted = (
        "data_dir",
        "host",
        "port",
        "grpc_port",
        "backends",
        "tls_cert_file",
        "tls_key_file",
        "backend_tls_ca_file",
        "backend_tls_cert_file",
        "backend_tls_key_file",
        "workers",
    )
    overrides = {k: v for k, v in vars(args).items() if k in wanted and v is not None}
    try:
        settings = GatewaySettings(**overrides)
    except (ValidationError, ValueError) as error:
        raise InvalidInput(f"invalid gateway settings: {error}") from None
    serve(settings, then=demo_step(settings.data_dir) if args.demo else None)
    return 0
