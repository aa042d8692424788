"""Bad requests get their gRPC status and a message naming the problem; the server keeps serving."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from core.server_process import ServerProcess
from protos import codecs
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

Mutate = Callable[[pb.ModelInferRequest], None]


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def good_request(rows: int = 2) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="mlp")
    codecs.encode_input(request, "x", np.ones((rows, 64), np.float32))
    return request


def set_shape(*shape: int) -> Mutate:
    def mutate(request: pb.ModelInferRequest) -> None:
        del request.inputs[0].shape[:]
        request.inputs[0].shape.extend(shape)

    return mutate


def set_field(field: str, value: str) -> Mutate:
    return lambda request: setattr(request.inputs[0], field, value)


def truncate_raw(request: pb.ModelInferRequest) -> None:
    request.raw_input_contents[0] = request.raw_input_contents[0][:-3]


def add_second_raw(request: pb.ModelInferRequest) -> None:
    request.raw_input_contents.append(b"\x00" * 4)


def typed_with_wrong_count(request: pb.ModelInferRequest) -> None:
    del request.raw_input_contents[:]
    request.inputs[0].contents.fp32_contents.extend([1.0] * 5)


def unknown_output(request: pb.ModelInferRequest) -> None:
    request.outputs.add(name="logits")


def duplicate_input(request: pb.ModelInferRequest) -> None:
    codecs.encode_input(request, "x", np.ones((2, 64), np.float32))


CASES: list[tuple[str, Mutate, grpc.StatusCode, str]] = [
    ("unknown model", lambda r: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, "model 'nope'"),
    ("unknown version", lambda r: setattr(r, "model_version", "9"), grpc.StatusCode.NOT_FOUND, "version '9'"),
    (
        "wrong input name",
        set_field("name", "pixels"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown input 'pixels'",
    ),
    ("wrong datatype", set_field("datatype", "FP64"), grpc.StatusCode.INVALID_ARGUMENT, "raw content has"),
    (
        "unknown datatype",
        set_field("datatype", "FLOAT"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unsupported datatype",
    ),
    ("wrong width", set_shape(4, 32), grpc.StatusCode.INVALID_ARGUMENT, "shape [4, 32]"),
    ("wrong rank", set_shape(128), grpc.StatusCode.INVALID_ARGUMENT, "shape [128]"),
    ("negative dim", set_shape(-2, 64), grpc.StatusCode.INVALID_ARGUMENT, "negative dimension"),
    ("zero rows", set_shape(0, 64), grpc.StatusCode.INVALID_ARGUMENT, "raw content has"),
    ("absurd shape", set_shape(2**40, 2**40), grpc.StatusCode.INVALID_ARGUMENT, "over the server's limit"),
    ("short raw", truncate_raw, grpc.StatusCode.INVALID_ARGUMENT, "raw content has 509 bytes, expected 512"),
    ("raw count", add_second_raw, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents has 2 entries"),
    ("typed count", typed_with_wrong_count, grpc.StatusCode.INVALID_ARGUMENT, "fp32_contents has 5 elements"),
    ("duplicate input", duplicate_input, grpc.StatusCode.INVALID_ARGUMENT, "appears more than once"),
    (
        "over max batch",
        lambda r: r.CopyFrom(good_request(65)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_batch_size 64",
    ),
    ("unknown output", unknown_output, grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'logits'"),
]


@pytest.mark.parametrize(("mutate", "code", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_gets_status_and_server_answers_next(
    stub: pb_grpc.GRPCInferenceServiceStub, mutate: Mutate, code: grpc.StatusCode, message: str
) -> None:
    request = good_request()
    mutate(request)
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request, timeout=10)
    assert error.value.code() == code
    assert message in str(error.value.details())
    response = stub.ModelInfer(good_request(), timeout=10)
    assert list(response.outputs[0].shape) == [2, 10]


def test_typed_contents_are_accepted(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(model_name="int64")
    codecs.encode_input(request, "x", np.arange(8, dtype=np.int64).reshape(2, 4), raw=False)
    outputs = codecs.decode_response_outputs(stub.ModelInfer(request, timeout=10))
    assert outputs["total"].tolist() == [6, 22]


def test_missing_input_is_named(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(pb.ModelInferRequest(model_name="mlp"), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing input 'x'" in str(error.value.details())


def test_load_and_unload_refused_in_none_mode(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="m"), timeout=10)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--model-control-mode explicit" in str(error.value.details())


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"file:1/model.onnx": pb.ModelRepositoryParameter(bytes_param=b"x")},
            "needs the 'config' parameter",
        ),
        (
            {
                "config": pb.ModelRepositoryParameter(string_param="{}"),
                "file:../evil/model.onnx": pb.ModelRepositoryParameter(bytes_param=b"x"),
            },
            "must be 'file:<version>/<name>'",
        ),
        (
            {
                "config": pb.ModelRepositoryParameter(string_param="{}"),
                "file:1/model.onnx": pb.ModelRepositoryParameter(bytes_param=b"not onnx"),
            },
            "onnxruntime cannot load model.onnx",
        ),
        ({"config": pb.ModelRepositoryParameter(string_param="{not json")}, "not a valid model config"),
        ({"colour": pb.ModelRepositoryParameter(string_param="red")}, "unknown load parameter 'colour'"),
    ],
    ids=["files without config", "path escape", "not onnx", "bad config json", "unknown parameter"],
)
def test_bad_load_requests_are_refused_with_reason(
    start_server: Callable[..., ServerProcess],
    parameters: dict[str, pb.ModelRepositoryParameter],
    message: str,
) -> None:
    server = start_server("--model-control-mode", "explicit")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.RepositoryModelLoadRequest(model_name="m", parameters=parameters)
        with pytest.raises(grpc.RpcError) as error:
            stub.RepositoryModelLoad(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in str(error.value.details())
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready


def test_unimplemented_rpcs_say_so(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(), timeout=10)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
