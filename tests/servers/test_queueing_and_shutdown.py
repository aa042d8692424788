"""Queue bounds, deadlines and graceful shutdown of a real server process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.server_process import ServerProcess
from examples.onnx_models import mlp, write_version
from protos import codecs
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc
from tests.servers.conftest import StartServer

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e


def request(model: str, timeout_us: int = 0) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model)
    if timeout_us:
        message.parameters["timeout"].int64_param = timeout_us
    codecs.encode_input(message, "x", np.ones((1, 64), np.float32))
    return message


async def call(stub: pb_grpc.GRPCInferenceServiceAsyncStub, message: pb.ModelInferRequest) -> grpc.StatusCode:
    try:
        await stub.ModelInfer(message, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_full_queue_answers_resource_exhausted(server: ServerProcess) -> None:
    # slow_queue holds its first request for 2 s and lets 4 wait: the rest must be refused at once.
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        codes = await asyncio.gather(*(call(stub, request("slow_queue")) for _ in range(10)))
    assert codes.count(grpc.StatusCode.OK) == 4
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 6


async def test_expired_timeout_answers_deadline_exceeded(server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        # The queue holds its first request for 2 s: an answer before then is the 0.1 s timeout's.
        code = await asyncio.wait_for(call(stub, request("slow_queue", timeout_us=100_000)), timeout=1.5)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await call(stub, request("mlp")) == grpc.StatusCode.OK


def test_health_service_reports_serving(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_sigterm_drains_in_flight_requests_then_exits(
    repository: Path, start_server: StartServer
) -> None:
    server = start_server("--model-repository", str(repository), "--exit-timeout-secs", "10")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        # Four requests wait 2 s in slow_queue's batcher (its queue holds 4) while the server stops.
        in_flight = [asyncio.create_task(call(stub, request("slow_queue"))) for _ in range(4)]
        # A probe that finds the queue full proves all four arrived; one that finds room expires at once.
        while await call(stub, request("slow_queue", timeout_us=1)) != grpc.StatusCode.RESOURCE_EXHAUSTED:
            pass
        stopped_at = time.monotonic()
        server.process.terminate()
        codes = await asyncio.gather(*in_flight)
    assert codes == [grpc.StatusCode.OK] * 4
    assert await asyncio.to_thread(server.process.wait, 15) == 0
    assert time.monotonic() - stopped_at < 10
    assert not server.is_serving()


async def test_reloading_a_model_never_interrupts_its_requests(
    tmp_path: Path, start_server: StartServer
) -> None:
    write_version(tmp_path, "live", 1, mlp([64, 64, 10], seed=1), "max_batch_size: 8\ndynamic_batching {}\n")
    server = start_server(
        "--model-repository", str(tmp_path), "--model-control-mode", "explicit", "--load-model", "live"
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stop = asyncio.Event()
        codes: list[grpc.StatusCode] = []
        answered = asyncio.Condition()

        async def traffic() -> None:
            while not stop.is_set():
                code = await call(stub, request("live"))
                async with answered:
                    codes.append(code)
                    answered.notify_all()

        async def more_answers(count: int) -> None:
            target = len(codes) + count
            async with answered:
                await answered.wait_for(lambda: len(codes) >= target)

        clients = [asyncio.create_task(traffic()) for _ in range(4)]
        for version in (2, 3, 4):
            await more_answers(10)  # traffic is flowing before each reload...
            write_version(tmp_path, "live", version, mlp([64, 64, 10], seed=version))
            load_request = pb.RepositoryModelLoadRequest(model_name="live")
            reload = stub.RepositoryModelLoad(load_request, timeout=60)  # starts the call at once
            await more_answers(10)  # ...and while it runs
            await reload
            metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name="live"), timeout=10)
            assert metadata.versions == [str(version)]
        stop.set()
        await asyncio.gather(*clients)
    assert len(codes) >= 60
    assert set(codes) == {grpc.StatusCode.OK}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", ["3"]),
        ("version_policy { latest { num_versions: 2 } }", ["2", "3"]),
        ("version_policy { all {} }", ["1", "2", "3"]),
        ("version_policy { specific { versions: [1, 3] } }", ["1", "3"]),
    ],
    ids=["default latest", "latest 2", "all", "specific"],
)
def test_version_policy_selects_versions(
    tmp_path: Path, start_server: StartServer, policy: str, expected: list[str]
) -> None:
    for version in (1, 2, 3):
        write_version(tmp_path, "multi", version, mlp([4, 3], seed=version), f"max_batch_size: 2\n{policy}\n")
    server = start_server("--model-repository", str(tmp_path))
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="multi"), timeout=10)
        assert list(metadata.versions) == expected
        for served in expected:
            message = pb.ModelInferRequest(model_name="multi", model_version=served)
            codecs.encode_input(message, "x", np.ones((1, 4), np.float32))
            assert stub.ModelInfer(message, timeout=10).model_version == served


def test_config_that_contradicts_the_model_is_refused_with_reason(
    tmp_path: Path, start_server: StartServer
) -> None:
    write_version(
        tmp_path,
        "wrong",
        1,
        mlp([4, 3]),
        'max_batch_size: 2\ninput { name: "x" data_type: TYPE_INT32 dims: [4] }\n'
        'output { name: "y" data_type: TYPE_FP32 dims: [3] }\n',
    )
    write_version(tmp_path, "fine", 1, mlp([4, 3]))
    server = start_server("--model-repository", str(tmp_path))
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        index = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
        states = {m.name: m for m in index.models}
        assert states["fine"].state == "READY"
        assert states["wrong"].state == "UNAVAILABLE"
        assert "input 'x' is INT32 in the config but FP32 in the ONNX model" in states["wrong"].reason
