"""``mdeploy-server``: the gRPC inference server. Flags mirror tritonserver's where they mean the same."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.errors import MdeployError
from core.settings_file import read_settings_file
from servers.app import serve
from servers.settings import EXECUTION_PROVIDERS, ModelControlMode, ServerSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdeploy-server",
        description="Serve ONNX models over the KServe v2 / Triton gRPC protocol. "
        "Every flag can also be set as MDEPLOY_SERVER_<NAME> in the environment or in --settings-file.",
    )
    add = parser.add_argument
    add("--model-repository", type=Path, help="Triton-layout model repository folder")
    add("--grpc-address", help="address to listen on (default 127.0.0.1)")
    add("--grpc-port", type=int, help="port to listen on; 0 picks a free one (default 8001)")
    add(
        "--auth-token-file",
        type=Path,
        help="refuse calls without 'authorization: Bearer <token in this file>' (mdeploy serve makes one)",
    )
    add("--tls-cert", dest="tls_cert_file", type=Path, help="PEM certificate to serve TLS with")
    add("--tls-key", dest="tls_key_file", type=Path, help="PEM private key of --tls-cert")
    add(
        "--tls-client-ca",
        dest="tls_client_ca_file",
        type=Path,
        help="accept only clients with a certificate from this CA (mutual TLS)",
    )
    add(
        "--allow-unauthenticated-health",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with a token, let grpc.health.v1 checks pass without it (default on)",
    )
    add(
        "--model-control-mode", choices=[m.value for m in ModelControlMode], help="none (default) or explicit"
    )
    add(
        "--load-model",
        action="append",
        dest="load_models",
        help="model to load at start in explicit mode; '*' for all",
    )
    add("--device", help="auto (default), cpu, cuda or cuda:<n>")
    add(
        "--execution-provider",
        choices=EXECUTION_PROVIDERS,
        help="what GPU-placed models run on: cuda (default) or tensorrt (engines cached under --work-dir)",
    )
    add(
        "--gpu-default-max-batch-size",
        type=int,
        help="max_batch_size of models without config.pbtxt that run on a GPU (default 1024)",
    )
    add("--intra-op-threads", type=int, help="onnxruntime intra-op threads (0: one per core)")
    add("--inter-op-threads", type=int, help="onnxruntime inter-op threads (0: onnxruntime's choice)")
    add(
        "--allow-spinning",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let idle onnxruntime threads spin (default off: they would take the event loop's CPU)",
    )
    add("--inline-batch-us", type=float, help="run batches faster than this on the event loop (default 200)")
    add(
        "--default-max-batch-size",
        type=int,
        help="max_batch_size of models without config.pbtxt that run on the CPU (default 64)",
    )
    add("--default-max-queue-size", type=int, help="queued requests per model version (default 1024)")
    add("--max-receive-message-mb", type=int, help="largest gRPC message accepted, MiB (default 256)")
    add("--max-send-message-mb", type=int, help="largest gRPC message sent, MiB (default 256)")
    add("--max-elements-per-input", type=int, help="largest element count of one input tensor")
    add(
        "--exit-timeout-secs", type=float, help="grace period for in-flight requests on shutdown (default 30)"
    )
    add(
        "--work-dir", type=Path, help="folder for models received over the wire (default: a temporary folder)"
    )
    add("--log-level", help="DEBUG, INFO (default), WARNING, ERROR")
    add("--settings-file", type=Path, help="JSON or TOML file of settings (lowest precedence after defaults)")
    return parser


def settings_from(args: argparse.Namespace) -> ServerSettings:
    """Flags over environment over settings file over defaults."""
    values: dict[str, Any] = {}
    settings_file = args.settings_file or os.environ.get("MDEPLOY_SERVER_SETTINGS_FILE")
    if settings_file:
        from_file = read_settings_file(Path(settings_file))
        values.update({k: v for k, v in from_file.items() if f"MDEPLOY_SERVER_{k.upper()}" not in os.environ})
    values.update({k: v for k, v in vars(args).items() if v is not None and k != "settings_file"})
    return ServerSettings(**values)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when installed (it comes with uvicorn[standard]), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except (ValidationError, ValueError, OSError) as error:
        print(f"mdeploy-server: invalid settings: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        run(serve(settings))
    except MdeployError as error:
        print(f"mdeploy-server: {error.message}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"mdeploy-server: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
