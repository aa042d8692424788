"""The benchmark's gRPC relay hands requests to mdeploy-server and its answers back unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from core.server_process import ServerProcess, start_server_process
from core.server_token import ensure_token
from examples.onnx_models import mlp, write_version
from loadtests.gateway.bench_grpc import relay
from loadtests.server.targets import Endpoint

pytestmark = pytest.mark.e2e  # starts mdeploy-server and the relay


@pytest.fixture
def closed_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    write_version(tmp_path / "repository", "mlp", 1, mlp([64, 64, 10], seed=1))
    token_file = tmp_path / "server-token"
    ensure_token(token_file)
    args = ["--grpc-port", "0", "--model-repository", str(tmp_path / "repository")]
    server = start_server_process([*args, "--auth-token-file", str(token_file)])
    yield server, token_file
    server.stop(timeout_s=10)


def infer(endpoint: str, rows: np.ndarray) -> triton.InferResult:
    with triton.InferenceServerClient(endpoint) as client:
        tensor = triton.InferInput("x", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        return client.infer("mlp", [tensor])


def test_the_relay_answers_as_the_server_does_with_its_token(
    closed_server: tuple[ServerProcess, Path],
) -> None:
    server, token_file = closed_server
    rows = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    with relay(server.address, token_file) as hop:
        assert isinstance(hop, Endpoint)
        answer = infer(hop.address, rows)
    assert answer.get_response().model_name == "mlp"
    session = ort.InferenceSession(mlp([64, 64, 10], seed=1).SerializeToString())
    np.testing.assert_allclose(answer.as_numpy("y"), session.run(None, {"x": rows})[0], rtol=1e-5, atol=1e-6)


def test_without_the_token_the_server_refuses_what_the_relay_forwards(
    closed_server: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    server, _ = closed_server
    other = tmp_path / "other-token"
    ensure_token(other)
    rows = np.zeros((1, 64), np.float32)
    with relay(server.address, other) as hop, pytest.raises(InferenceServerException) as refused:
        infer(hop.address, rows)
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
