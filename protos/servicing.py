"""Registering a GRPCInferenceService servicer: the mdeploy-server's and the gateway's.

The generated registration hands undecodable request bytes to gRPC, which then answers
UNKNOWN, logs a traceback and, inside a stream, leaves the stream hanging. Registered through
``add_inference_service`` the servicer receives a ``Malformed`` instead, and answers
INVALID_ARGUMENT itself.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from core.errors import InvalidInput
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc

SERVICE_NAME = "inference.GRPCInferenceService"

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Req, Context], Awaitable[Resp]]
Metadata = tuple[tuple[str, str], ...]
StatusOf = Callable[[Exception], tuple[grpc.StatusCode, str, Metadata]]
"""What an error becomes: its code, its message and the trailing metadata that go with it."""


@dataclass(frozen=True)
class Malformed:
    """What the servicer gets instead of a request whose bytes are not a valid protobuf message."""

    reason: str

    def error(self) -> InvalidInput:
        return InvalidInput(f"malformed request: {self.reason}")


def answering_errors(status_of: StatusOf) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """A servicer method decorator: every failure (a ``Malformed`` request too) leaves as the
    status ``status_of`` gives it, never as a traceback."""

    def decorate(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Req, context: Context) -> Resp:
            try:
                if isinstance(request, Malformed):
                    raise request.error()
                return await handler(self, request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as error:
                code, message, trailing = status_of(error)
                await context.abort(code, message, trailing)
                raise  # abort raises; this line satisfies the type checker

        return wrapper

    return decorate


class _Handlers:
    """Stands in for the server to collect the method handlers the generated code registers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # built again below from the same method handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service = service
        self.handlers = dict(handlers)


def _tolerant(handler: Any) -> Any:
    """``handler`` with a deserializer that returns ``Malformed`` for bytes it cannot parse."""
    parse = handler.request_deserializer
    assert parse is not None

    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except DecodeError as error:
            return Malformed(str(error))

    serialize = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(handler.stream_stream, deserialize, serialize)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(handler.stream_unary, deserialize, serialize)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(handler.unary_stream, deserialize, serialize)
    return grpc.unary_unary_rpc_method_handler(handler.unary_unary, deserialize, serialize)


def add_inference_service(servicer: pb_grpc.GRPCInferenceServiceServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as the generated code would, with malformed messages tolerated."""
    collected = _Handlers()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, collected)  # type: ignore[arg-type]
    if not collected.handlers:
        raise RuntimeError("the generated stubs registered no method handlers")
    handlers = {method: _tolerant(handler) for method, handler in collected.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(collected.service, handlers),))
    server.add_registered_method_handlers(collected.service, handlers)  # type: ignore[attr-defined]


StreamRequest = pb.ModelInferRequest | Malformed


def stream_error(request: StreamRequest, message: str) -> pb.ModelStreamInferResponse:
    """A stream's answer to a request that failed: the message, and the request's names and id."""
    failed = pb.ModelInferResponse()
    if isinstance(request, pb.ModelInferRequest):
        failed = pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        )
    return pb.ModelStreamInferResponse(error_message=message, infer_response=failed)


async def answer_stream(
    requests: AsyncIterator[StreamRequest],
    infer: Callable[[StreamRequest], Awaitable[pb.ModelInferResponse]],
    message_of: Callable[[Exception], str],
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """ModelStreamInfer as Triton answers it: the requests run concurrently, and each answer (or
    its error, in ``error_message``) is sent as it completes; the stream stays open after errors."""
    answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
    pending: set[asyncio.Task[None]] = set()

    async def answer(request: StreamRequest) -> None:
        try:
            await answers.put(pb.ModelStreamInferResponse(infer_response=await infer(request)))
        except Exception as error:
            await answers.put(stream_error(request, message_of(error)))

    async def read() -> None:
        async for request in requests:
            task = asyncio.create_task(answer(request))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        await answers.put(None)

    reader = asyncio.create_task(read())
    try:
        while (item := await answers.get()) is not None:
            yield item
    finally:
        reader.cancel()
        for task in list(pending):
            task.cancel()
