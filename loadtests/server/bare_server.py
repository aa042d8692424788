"""The gRPC ceiling: a grpc.aio server on the inference proto that does no inference.

``ModelInfer`` decodes the request's raw inputs into numpy (as mdeploy-server must) and
returns a reply built once at start. It is started like mdeploy-server (same channel options,
uvloop when the real server uses it), so the difference to mdeploy-server is the server's own
work: validation, batching, the executor hop, onnxruntime and building the response.

Run: ``python -m loadtests.server.bare_server --port 0``; it prints ``bare-server listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc
import numpy as np

from loadtests.common import loop
from protos import codecs
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc
from servers.app import channel_options
from servers.settings import ServerSettings

LISTENING = "bare-server listening on"


def fixed_reply(outputs: int) -> pb.ModelInferResponse:
    """What the tiny model would answer for one row: ``y`` FP32 [1, outputs]."""
    reply = pb.ModelInferResponse(model_name="bare", model_version="1")
    codecs.encode_output(reply, "y", np.zeros((1, outputs), np.float32))
    return reply


class BareService(pb_grpc.GRPCInferenceServiceServicer):
    """Only ModelInfer; every other RPC stays UNIMPLEMENTED (the generated default)."""

    def __init__(self, reply: pb.ModelInferResponse) -> None:
        self._reply = reply

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ModelInferResponse:
        codecs.decode_request_inputs(request)
        return self._reply


async def serve(host: str, port: int, outputs: int) -> None:
    server = grpc.aio.server(options=channel_options(ServerSettings()))
    # The generated base class answers the other RPCs with UNIMPLEMENTED; only its type stubs
    # declare them abstract.
    service = BareService(fixed_reply(outputs))  # type: ignore[abstract]
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"{LISTENING} {host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bare_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--outputs", type=int, default=10, help="width of the fixed FP32 reply")
    args = parser.parse_args(argv)
    loop.run(serve(args.host, args.port, args.outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
