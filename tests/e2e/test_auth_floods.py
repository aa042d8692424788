"""A flood of bad keys from one address, over both protocols, against a real gateway process."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
import tritonclient.grpc as triton

from core.ports import free_port
from core.server_process import ServerProcess, start_server_process
from gateway.process import GatewayProcess, start_gateway_process
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc
from tests.e2e.test_end_to_end import create_key

ALLOWANCE = 5
BAD = "mdk_0123456789abcdef_" + "x" * 43


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    server: ServerProcess = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    env = {"MDEPLOY_AUTH_FAILURES_PER_MINUTE": str(ALLOWANCE)}
    process = start_gateway_process(
        tmp_path_factory.mktemp("flood"), [server.address], grpc_port=free_port(), env=env
    )
    yield process
    process.stop(timeout_s=10)
    server.stop(timeout_s=10)


def test_a_flood_is_refused_at_once_on_both_protocols_and_valid_keys_go_on(gateway: GatewayProcess) -> None:
    valid = {"Authorization": f"Bearer {create_key(gateway, 'predict')}"}
    http = httpx.Client(base_url=gateway.url, timeout=30)
    assert http.get("/v1/models", headers=valid).status_code == 200  # remembered from now on
    answers = [http.get("/v1/models", headers={"X-API-Key": BAD}).status_code for _ in range(ALLOWANCE)]
    assert answers == [401] * ALLOWANCE
    refused = http.post("/v1/models/any:predict", json={}, headers={"Authorization": f"Bearer {BAD}"})
    assert refused.status_code == 429
    assert "too many failed authentications from 127.0.0.1" in refused.json()["error"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    with grpc.insecure_channel(gateway.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=(("x-api-key", BAD),))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = {item.key: item.value for item in caught.value.trailing_metadata() or ()}
    assert int(trailing["retry-after"]) >= 1
    # The valid key, verified before the flood, is served on both protocols from the same address.
    assert http.get("/v1/models", headers=valid).status_code == 200
    grpc_headers = {"authorization": valid["Authorization"]}
    assert (
        triton.InferenceServerClient(gateway.grpc_address).get_server_metadata(headers=grpc_headers).name
        == "mdeploy"
    )
    http.close()
