"""mdeploy-server with --auth-token-file answers only callers that present its token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as triton
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.server_process import ServerProcess, start_server_process
from core.server_token import ensure_token, read_token, token_metadata
from protos.generated import inference_pb2 as pb

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

METHODS = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "server-token"
    ensure_token(path)
    return path


@pytest.fixture(scope="module")
def closed(repository: Path, token_file: Path) -> Iterator[ServerProcess]:
    args = ["--grpc-port", "0", "--model-repository", str(repository), "--auth-token-file", str(token_file)]
    server = start_server_process(args)
    yield server
    server.stop(timeout_s=10)


def call(server: ServerProcess, method_name: str, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    """``method_name`` of the service with an empty request; the status it answered."""
    method = METHODS[[m.name for m in METHODS].index(method_name)]
    request_class = pb.DESCRIPTOR.message_types_by_name.get(method.input_type.name)
    request: Message = getattr(pb, request_class.name)() if request_class else pb.ModelInferRequest()
    path = f"/inference.GRPCInferenceService/{method.name}"
    with grpc.insecure_channel(server.address) as channel:
        try:
            if method.client_streaming:
                stream = channel.stream_stream(path, lambda m: m.SerializeToString(), lambda b: b)
                list(stream(iter([request]), metadata=metadata, timeout=10))
            else:
                unary = channel.unary_unary(path, lambda m: m.SerializeToString(), lambda b: b)
                unary(request, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", [m.name for m in METHODS])
def test_every_rpc_without_the_token_or_with_a_wrong_one_is_unauthenticated(
    closed: ServerProcess, method: str
) -> None:
    assert call(closed, method, ()) == grpc.StatusCode.UNAUTHENTICATED
    wrong = token_metadata("0" * 64)
    assert call(closed, method, wrong) == grpc.StatusCode.UNAUTHENTICATED


def test_the_token_holder_is_served(closed: ServerProcess, token_file: Path) -> None:
    client = triton.InferenceServerClient(closed.address)
    headers = dict(token_metadata(read_token(token_file)))
    assert client.is_server_ready(headers=headers)
    assert client.get_model_metadata("mlp", headers=headers).name == "mlp"


def test_health_checks_pass_without_the_token_unless_told_otherwise(
    closed: ServerProcess, repository: Path, token_file: Path
) -> None:
    assert closed.is_serving()  # the default: orchestrators' probes need no token
    args = ["--grpc-port", "0", "--auth-token-file", str(token_file), "--no-allow-unauthenticated-health"]
    strict = start_server_process(args, metadata=token_metadata(read_token(token_file)))
    try:
        with grpc.insecure_channel(strict.address) as channel, pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert strict.is_serving()  # with the token
    finally:
        strict.stop(timeout_s=10)
