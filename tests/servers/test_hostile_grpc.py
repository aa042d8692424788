"""Hostile ModelInfer traffic against a real mdeploy-server: every message gets its status code,
the server keeps serving, and its memory stays bounded.

test_bad_requests.py covers the ordinary mistakes; this module sends what an attacker or a
broken client would: impossible shapes, contradictory contents, bytes that are no protobuf
message at all, and messages at and over the size limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from core.server_process import ServerProcess, start_server_process
from examples.onnx_models import int64_affine, mlp, write_version
from protos import codecs
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
MAX_MESSAGE_MB = 4  # the server's receive limit here: near-max messages stay cheap to send
MAX_MESSAGE = MAX_MESSAGE_MB * MiB
INT64_MAX = 2**63 - 1
INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"

Code = grpc.StatusCode
Build = Callable[[], pb.ModelInferRequest]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hostile-repository")
    write_version(root, "mlp", 1, mlp([64, 64, 10], seed=1))
    write_version(root, "int64", 1, int64_affine(), "max_batch_size: 8\ndynamic_batching {}\n")
    process = start_server_process(
        ["--grpc-port", "0", "--grpc-address", "127.0.0.1", "--model-repository", str(root),
         "--max-receive-message-mb", str(MAX_MESSAGE_MB)]
    )  # fmt: skip
    yield process
    process.stop(timeout_s=10)


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    # The client may send more than the server accepts: the refusal is what is tested.
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", -1)]) as c:
        yield c


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def send_bytes(channel: grpc.Channel) -> Callable[[bytes], bytes]:
    """ModelInfer with the body as given: no serializer on either side."""
    call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
    return lambda body: call(body, timeout=10)


def good_request(rows: int = 2) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="mlp")
    codecs.encode_input(request, "x", np.ones((rows, 64), np.float32))
    return request


def tensor(
    shape: list[int],
    raw: bytes | None = b"",
    datatype: str = "FP32",
    model: str = "mlp",
) -> pb.ModelInferRequest:
    """One input 'x' of any shape and datatype; raw content when ``raw`` is not None."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def changed(change: Callable[[pb.ModelInferRequest], object], base: Build = good_request) -> Build:
    def build() -> pb.ModelInferRequest:
        request = base()
        change(request)
        return request

    return build


def typed(shape: list[int], datatype: str, model: str, field: str, values: list[int] | list[float]) -> Build:
    def build() -> pb.ModelInferRequest:
        request = tensor(shape, raw=None, datatype=datatype, model=model)
        getattr(request.inputs[0].contents, field).extend(values)
        return request

    return build


def both_raw_and_typed(request: pb.ModelInferRequest) -> None:
    request.inputs[0].contents.fp32_contents.extend([1.0] * 128)


def two_raw_buffers(request: pb.ModelInferRequest) -> None:
    request.raw_input_contents.append(b"\x00" * 512)


def negative_timeout(request: pb.ModelInferRequest) -> None:
    request.parameters["timeout"].int64_param = -5


def timeout_as_string(request: pb.ModelInferRequest) -> None:
    request.parameters["timeout"].string_param = "soon"


def classification(request: pb.ModelInferRequest) -> None:
    request.outputs.add(name="y").parameters["classification"].int64_param = 3


def output_twice(request: pb.ModelInferRequest) -> None:
    request.outputs.add(name="y")
    request.outputs.add(name="y")


INVALID = Code.INVALID_ARGUMENT

# (id, request, status code, a substring of the message)
CASES: list[tuple[str, Build, Code, str]] = [
    # shapes
    ("negative dim [-1,2]", lambda: tensor([-1, 2]), INVALID, "negative dimension"),
    ("zero dim [0,2]", lambda: tensor([0, 2]), INVALID, "does not match the model's ['batch', 64]"),
    ("zero rows [0,64]", lambda: tensor([0, 64]), INVALID, "batch size (first dimension) must be at least 1"),
    ("[2**62,2**62]", lambda: tensor([2**62, 2**62]), INVALID, "over the server's limit"),
    ("dims overflow int64", lambda: tensor([INT64_MAX, INT64_MAX, 3]), INVALID, "over the server's limit"),
    ("zero times overflow raw", lambda: tensor([0, 2**62, 2**62]), INVALID, "too large for any tensor"),
    ("zero times max typed", lambda: tensor([0, INT64_MAX], raw=None), INVALID, "too large for any tensor"),
    ("zero times max BYTES", lambda: tensor([0, INT64_MAX], datatype="BYTES"), INVALID, "too large for any"),
    ("rank 33", lambda: tensor([1] * 33, b"\x00" * 4), INVALID, "33 dimensions; at most 32"),
    ("rank 1000", lambda: tensor([1] * 1000, b"\x00" * 4), INVALID, "1000 dimensions; at most 32"),
    ("scalar", lambda: tensor([], b"\x00" * 4), INVALID, "shape [] does not match"),
    # element counts and raw lengths
    ("count > raw", lambda: tensor([3, 64], b"\x00" * 512), INVALID, "has 512 bytes, expected 768"),
    ("raw not whole", lambda: tensor([2, 64], b"\x00" * 511), INVALID, "has 511 bytes, expected 512"),
    ("raw > count", lambda: tensor([2, 64], b"\x00" * 4096), INVALID, "has 4096 bytes, expected 512"),
    (
        "typed > count",
        typed([2, 64], "FP32", "mlp", "fp32_contents", [1.0] * 129),
        INVALID,
        "has 129 elements",
    ),
    ("two raw, one input", changed(two_raw_buffers), INVALID, "raw_input_contents has 2 entries for 1"),
    (
        "raw, no input",
        lambda: pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b"x"]),
        INVALID,
        "1 entries for 0 inputs",
    ),
    ("raw and typed", changed(both_raw_and_typed), INVALID, "both raw_input_contents and typed contents"),
    # datatypes
    (
        "FP64 for FP32",
        lambda: tensor([2, 64], b"\x00" * 1024, "FP64"),
        INVALID,
        "FP64 does not match the model's FP32",
    ),
    (
        "unknown datatype",
        lambda: tensor([2, 64], b"\x00" * 512, "FLOAT"),
        INVALID,
        "unsupported datatype 'FLOAT'",
    ),
    ("empty datatype", lambda: tensor([2, 64], b"\x00" * 512, ""), INVALID, "unsupported datatype ''"),
    (
        "BYTES huge length",
        lambda: tensor([2, 64], b"\xff" * 512, "BYTES"),
        INVALID,
        "declares 4294967295 bytes",
    ),
    ("BYTES cut length", lambda: tensor([2, 64], b"\x00\x00", "BYTES"), INVALID, "truncated length"),
    ("FP16 typed", typed([2, 64], "FP16", "mlp", "fp32_contents", [1.0] * 128), INVALID, "FP16 has no typed"),
    (
        "INT8 out of range",
        typed([2, 4], "INT8", "int64", "int_contents", [1000] * 8),
        INVALID,
        "out of range for INT8",
    ),
    (
        "UINT64 for INT64",
        typed([2, 4], "UINT64", "int64", "uint64_contents", [2**64 - 1] * 8),
        INVALID,
        "UINT64 does not match the model's INT64",
    ),
    (
        "typed in wrong field",
        typed([2, 64], "FP32", "mlp", "int64_contents", [1] * 128),
        INVALID,
        "fp32_contents has 0 elements",
    ),
    # models, versions, parameters, outputs
    ("unknown model", changed(lambda r: setattr(r, "model_name", "nope")), Code.NOT_FOUND, "model 'nope'"),
    (
        "empty model",
        changed(lambda r: setattr(r, "model_name", "")),
        Code.NOT_FOUND,
        "model '' is not loaded",
    ),
    (
        "version '²'",
        changed(lambda r: setattr(r, "model_version", "²")),
        Code.NOT_FOUND,
        "no loaded version '²'",
    ),
    (
        "version of 5000 digits",
        changed(lambda r: setattr(r, "model_version", "9" * 5000)),
        Code.NOT_FOUND,
        "no loaded version",
    ),
    (
        "version -1",
        changed(lambda r: setattr(r, "model_version", "-1")),
        Code.NOT_FOUND,
        "no loaded version '-1'",
    ),
    ("over max batch", lambda: tensor([9, 4], b"\x00" * 288, "INT64", "int64"), INVALID, "max_batch_size 8"),
    ("negative timeout", changed(negative_timeout), INVALID, "'timeout' must be a non-negative"),
    ("timeout as string", changed(timeout_as_string), INVALID, "'timeout' must be an int64_param"),
    ("classification", changed(classification), Code.UNIMPLEMENTED, "classification extension"),
    ("output twice", changed(output_twice), INVALID, "requested more than once"),
]


@pytest.mark.parametrize(("build", "code", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_request_gets_its_status_and_the_next_request_is_served(
    stub: pb_grpc.GRPCInferenceServiceStub, build: Build, code: Code, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(build(), timeout=10)
    assert (error.value.code(), message in str(error.value.details())) == (code, True), error.value.details()
    assert list(stub.ModelInfer(good_request(), timeout=10).outputs[0].shape) == [2, 10]


def valid_body() -> bytes:
    return good_request().SerializeToString()


# Bodies that are not a ModelInferRequest, sent without a serializer.
MALFORMED: list[tuple[str, bytes]] = [
    ("garbage", b"\xff\xff\xff\xff"),
    ("truncated message", valid_body()[:-10]),
    ("length past the end", b"\x0a\xff\xff\xff\xff\x0f"),
    ("invalid UTF-8 model name", b"\x0a\x02\xff\xfe"),
    ("unterminated varint", b"\x08" + b"\xff" * 11),
    ("end-group tag", b"\x0c"),
    ("near-max garbage", b"\x0a" + b"\xff" * (MAX_MESSAGE - 1024)),
]


@pytest.mark.parametrize("body", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_protobuf_is_invalid_argument(
    send_bytes: Callable[[bytes], bytes], stub: pb_grpc.GRPCInferenceServiceStub, body: bytes
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        send_bytes(body)
    assert error.value.code() == Code.INVALID_ARGUMENT
    assert "malformed request" in str(error.value.details())
    assert list(stub.ModelInfer(good_request(), timeout=10).outputs[0].shape) == [2, 10]


def test_empty_body_is_a_request_for_no_model(send_bytes: Callable[[bytes], bytes]) -> None:
    with pytest.raises(grpc.RpcError) as error:
        send_bytes(b"")
    assert error.value.code() == Code.NOT_FOUND


def test_malformed_body_on_other_rpcs_is_invalid_argument(channel: grpc.Channel) -> None:
    for method in ("ModelMetadata", "ModelReady", "RepositoryModelLoad", "ServerLive"):
        call = channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as error:
            call(b"\xff\xff", timeout=10)
        assert error.value.code() == Code.INVALID_ARGUMENT, method


def test_malformed_message_in_a_stream_is_answered_and_the_stream_goes_on(channel: grpc.Channel) -> None:
    call = channel.stream_stream(STREAM_INFER, request_serializer=None, response_deserializer=None)
    answers = [
        pb.ModelStreamInferResponse.FromString(answer)
        for answer in call(iter([valid_body(), b"\xff\xff", valid_body()]), timeout=10)
    ]
    errors = sorted(answer.error_message for answer in answers)
    assert errors[:2] == ["", ""]
    assert errors[2].startswith("malformed request")


@pytest.mark.parametrize(
    "body",
    [
        b"\x00" * (MAX_MESSAGE + 1),
        tensor([2, 64], b"\x00" * (MAX_MESSAGE + 1)).SerializeToString(),
    ],
    ids=["over-max garbage", "over-max raw content"],
)
def test_over_max_message_is_resource_exhausted(
    send_bytes: Callable[[bytes], bytes], stub: pb_grpc.GRPCInferenceServiceStub, body: bytes
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        send_bytes(body)
    assert error.value.code() == Code.RESOURCE_EXHAUSTED
    assert "larger than max" in str(error.value.details())
    assert list(stub.ModelInfer(good_request(), timeout=10).outputs[0].shape) == [2, 10]


ROUNDS = 7


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def near_max_raw_mismatch() -> pb.ModelInferRequest:
    """A well-formed message just under the limit whose raw content does not fit its shape."""
    return tensor([2, 64], b"\x01" * (MAX_MESSAGE - 4096))


def near_max_typed_mismatch() -> pb.ModelInferRequest:
    """Just under the limit in typed contents (packed FP32) that do not fit the shape."""
    return typed([2, 64], "FP32", "mlp", "fp32_contents", [1.0] * ((MAX_MESSAGE - 4096) // 4))()


def test_memory_stays_bounded_under_hostile_traffic(
    server: ServerProcess, stub: pb_grpc.GRPCInferenceServiceStub, send_bytes: Callable[[bytes], bytes]
) -> None:
    hostile = [build() for _, build, _, _ in CASES]
    near_max = [near_max_raw_mismatch(), near_max_typed_mismatch()] * 2
    bodies = [body for _, body in MALFORMED] + [b"\x00" * (MAX_MESSAGE + 1)]

    def one_round() -> int:
        sent = 0
        for request in [*hostile, *near_max]:
            with pytest.raises(grpc.RpcError):
                stub.ModelInfer(request, timeout=10)
            sent += request.ByteSize()
        for body in bodies:
            with pytest.raises(grpc.RpcError):
                send_bytes(body)
            sent += len(body)
        return sent

    one_round()  # warm-up: allocator pools and gRPC buffers reach their working size
    before = rss_bytes(server.process.pid)
    sent = sum(one_round() for _ in range(ROUNDS))
    growth = rss_bytes(server.process.pid) - before
    print(f"RSS {before / MiB:.1f} MiB, growth {growth / MiB:.1f} MiB")
    requests = ROUNDS * (len(hostile) + len(near_max) + len(bodies))
    assert requests >= 300
    assert sent > 150 * MiB  # far more than the bound: a leak of bodies could not hide under it
    assert growth < 100 * MiB, f"RSS grew {growth / MiB:.1f} MiB over {requests} hostile requests"
    assert list(stub.ModelInfer(good_request(), timeout=10).outputs[0].shape) == [2, 10]
    assert "Traceback" not in server.log, server.log[-4000:]
