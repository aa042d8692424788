"""The gRPC door when no inference server answers: UNAVAILABLE with the HTTP answer's message."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from core.ports import free_port
from core.server_process import start_server_process
from gateway.process import start_gateway_process
from tests.e2e.arms import MODEL
from tests.e2e.test_deployments import push_arms
from tests.e2e.test_end_to_end import create_key
from tests.e2e.test_grpc_api import arms_input, bearer

SERVING = health_pb2.HealthCheckResponse.SERVING


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
        # grpc.health.v1 follows readiness, so a gRPC load balancer stops sending here.
        with grpc.insecure_channel(gateway.grpc_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 10
            while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING:
                assert time.monotonic() < deadline, "grpc.health.v1 still SERVING without an inference server"
                time.sleep(0.1)
            check = health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)
