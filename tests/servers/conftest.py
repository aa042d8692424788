"""Real mdeploy-server processes on 127.0.0.1 and the model repositories they serve."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import pytest
import tritonclient.grpc as triton

from core.server_process import ServerProcess, start_server_process
from examples.onnx_models import int64_affine, mlp, write_version

StartServer = Callable[..., ServerProcess]

# A model whose batcher holds the first request for 2 s: queue bounds and deadlines can be
# tested without depending on how fast this machine computes.
SLOW_QUEUE_CONFIG = """
max_batch_size: 64
dynamic_batching {
  max_queue_delay_microseconds: 2000000
  default_queue_policy { max_queue_size: 4 }
}
"""

BATCHING_CONFIG = """
max_batch_size: 64
dynamic_batching { max_queue_delay_microseconds: 20000 }
"""


@pytest.fixture(scope="session")
def mlp_model() -> onnx.ModelProto:
    return mlp([64, 64, 10], seed=1)


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory, mlp_model: onnx.ModelProto) -> Path:
    root = tmp_path_factory.mktemp("repository")
    write_version(root, "mlp", 1, mlp_model)
    write_version(root, "int64", 1, int64_affine(), "max_batch_size: 8\ndynamic_batching {}\n")
    write_version(root, "batching", 1, mlp_model, BATCHING_CONFIG)
    write_version(root, "slow_queue", 1, mlp_model, SLOW_QUEUE_CONFIG)
    return root


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    started: list[ServerProcess] = []

    def start(*args: str, **kwargs: object) -> ServerProcess:
        server = start_server_process(["--grpc-port", "0", "--grpc-address", "127.0.0.1", *args], **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(timeout_s=10)


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    """One server for a test module: explicit mode, every repository model loaded."""
    process = start_server_process(
        [
            "--grpc-port", "0",
            "--model-repository", str(repository),
            "--model-control-mode", "explicit",
            "--load-model", "*",
        ]
    )  # fmt: skip
    yield process
    process.stop(timeout_s=10)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.address) as c:
        yield c


@pytest.fixture
def server_address(server: ServerProcess) -> str:
    return server.address
