"""The gRPC door when no inference server answers: UNAVAILABLE with the HTTP answer's message."""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from core.ports import free_port
from core.server_process import start_server_process
from gateway.process import start_gateway_process
from tests.e2e.arms import MODEL
from tests.e2e.test_deployments import push_arms
from tests.e2e.test_end_to_end import create_key
from tests.e2e.test_grpc_api import arms_input, bearer


def test_a_model_whose_servers_are_gone_is_unavailable_and_readiness_says_so(tmp_path: Path) -> None:
    server = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    env = {"MDEPLOY_HEALTH_INTERVAL_S": "0.1"}
    gateway = start_gateway_process(tmp_path / "gateway", [server.address], grpc_port=free_port(), env=env)
    try:
        push_arms(gateway, tmp_path)
        key = bearer(create_key(gateway, "predict"))
        client = triton.InferenceServerClient(gateway.grpc_address)
        assert client.is_server_ready()
        server.stop(timeout_s=10)
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL, arms_input(), headers=key)
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
        assert "inference server" in (refused.value.message() or "")
        assert not client.is_server_ready()
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)
