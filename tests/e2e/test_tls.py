"""TLS everywhere a wire leaves the host: gateway APIs, and gateway to server with mutual TLS.

Certificates come from a throwaway CA (trustme); every connection is to 127.0.0.1, verified
against that CA as a client on another host would verify the real one.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.ports import free_port
from core.server_process import ServerProcess, start_server_process
from core.server_token import ensure_token, token_metadata
from gateway.process import GatewayProcess, start_gateway_process
from tests.e2e.arms import GOOD, MODEL, build_arm_packages
from tests.e2e.test_end_to_end import create_key


@dataclass(frozen=True)
class Pems:
    ca: Path
    cert: Path
    key: Path


@dataclass
class Stack:
    pems: Pems
    server: ServerProcess
    gateway: GatewayProcess
    key: str


def write_pems(folder: Path) -> Pems:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")  # server and client use: trustme allows both
    paths = Pems(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    ca.cert_pem.write_to_path(str(paths.ca))
    leaf.private_key_pem.write_to_path(str(paths.key))
    paths.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return paths


def client_credentials(pems: Pems, *, with_certificate: bool) -> grpc.ChannelCredentials:
    pair = (pems.key.read_bytes(), pems.cert.read_bytes()) if with_certificate else (None, None)
    return grpc.ssl_channel_credentials(pems.ca.read_bytes(), *pair)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("tls")
    pems = write_pems(folder)
    token_file = folder / "server-token"
    token = ensure_token(token_file)
    tls = ["--tls-cert", str(pems.cert), "--tls-key", str(pems.key)]
    server = start_server_process(
        ["--grpc-port", "0", "--model-control-mode", "explicit", "--auth-token-file", str(token_file), *tls,
         "--tls-client-ca", str(pems.ca)],
        metadata=token_metadata(token),
        credentials=client_credentials(pems, with_certificate=True),
    )  # fmt: skip
    backend = f"grpcs://{server.address}?token_file={token_file}&ca_file={pems.ca}&cert_file={pems.cert}&key_file={pems.key}"
    gateway = start_gateway_process(
        folder / "gateway", [backend], grpc_port=free_port(), tls_ca=pems.ca, extra_args=tls
    )
    try:
        package = build_arm_packages(folder)["a"]
        verify = ssl.create_default_context(cafile=pems.ca)
        pushed = httpx.post(
            f"{gateway.url}/v1/admin/packages",
            content=package.read_bytes(),
            headers={
                "Authorization": f"Bearer {gateway.admin_key}",
                "Content-Type": "application/octet-stream",
            },
            verify=verify,
            timeout=120,
        )
        assert pushed.status_code == 201, pushed.text
        yield Stack(pems, server, gateway, create_key(gateway, "predict"))
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)


def test_https_and_grpc_over_tls_reach_a_model_behind_mutual_tls(stack: Stack) -> None:
    assert stack.gateway.url.startswith("https://")
    verify = ssl.create_default_context(cafile=stack.pems.ca)
    answer = httpx.post(
        f"{stack.gateway.url}/v1/models/{MODEL}:predict",
        json={"instances": [GOOD]},
        headers={"Authorization": f"Bearer {stack.key}"},
        verify=verify,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [GOOD]
    client = triton.InferenceServerClient(
        stack.gateway.grpc_address, ssl=True, root_certificates=str(stack.pems.ca)
    )
    data = np.array([GOOD], np.float32)
    tensor = triton.InferInput("x", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer(MODEL, [tensor], headers={"authorization": f"Bearer {stack.key}"})
    np.testing.assert_allclose(result.as_numpy("y"), [GOOD])


def test_plaintext_to_the_tls_listeners_gets_nothing(stack: Stack) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(stack.gateway.url.replace("https://", "http://") + "/v2/health/live", timeout=5)
    with grpc.insecure_channel(stack.gateway.grpc_address) as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_the_server_wants_a_client_certificate_from_its_ca(stack: Stack) -> None:
    without = client_credentials(stack.pems, with_certificate=False)
    with (
        grpc.secure_channel(stack.server.address, without) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails
    with grpc.secure_channel(
        stack.server.address, client_credentials(stack.pems, with_certificate=True)
    ) as channel:
        assert health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        ).status == (health_pb2.HealthCheckResponse.SERVING)
