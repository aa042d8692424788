"""The floor of any Python gRPC hop in front of mdeploy-server: a relay that does nothing else.

A grpc.aio server on uvloop (as the gateway runs) whose ``ModelInfer`` hands the request's bytes,
undecoded, to mdeploy-server over one grpc.aio channel with the server token, and returns the
reply's bytes unparsed. No auth, no routing, no batching, no protobuf work: what it adds to
mdeploy-server's latency is the cost of one gRPC server hop plus one gRPC client hop in this
process, which the gateway's door pays before doing any work of its own.

Run: ``python -m loadtests.gateway.grpc_relay --backend H:P --token-file F``; it prints
``grpc-relay listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

from core.server_token import read_token, token_metadata
from loadtests.common import loop
from protos.servicing import SERVICE_NAME

LISTENING = "grpc-relay listening on"
METHOD = "ModelInfer"


async def serve(host: str, port: int, backend: str, metadata: tuple[tuple[str, str], ...]) -> None:
    channel = grpc.aio.insecure_channel(backend)
    # No (de)serializers: the bytes pass through as they are.
    forward = channel.unary_unary(f"/{SERVICE_NAME}/{METHOD}", None, None)

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            reply: bytes = await forward(request, metadata=metadata)
        except grpc.aio.AioRpcError as error:  # the server's refusal, passed on as it is
            await context.abort(error.code(), error.details() or "")
        return reply

    handler = grpc.unary_unary_rpc_method_handler(model_infer)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {METHOD: handler}),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"{LISTENING} {host}:{bound}", flush=True)
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
    await channel.close(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grpc_relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backend", required=True, help="mdeploy-server's HOST:PORT")
    parser.add_argument("--token-file", type=Path, help="the server token the relay sends, if any")
    args = parser.parse_args(argv)
    metadata = token_metadata(read_token(args.token_file)) if args.token_file else ()
    loop.run(serve(args.host, args.port, args.backend, metadata))
    return 0


if __name__ == "__main__":
    sys.exit(main())
