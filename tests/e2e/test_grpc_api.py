"""The gateway's gRPC API with NVIDIA's unchanged tritonclient.grpc, against a real `mdeploy serve`.

One gateway process (HTTP and gRPC) in front of one mdeploy-server, with the ``arms`` model's
versions pushed. Keys are made in the gateway's database; every call goes over loopback.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

from core.ports import free_port
from core.server_process import ServerProcess, start_server_process
from core.server_token import ensure_token, token_metadata
from gateway.auth.keys import with_keys
from gateway.process import GatewayProcess, start_gateway_process
from gateway.settings import GatewaySettings
from modelpkg.builder import build
from protos import codecs
from protos.generated import inference_pb2 as pb
from protos.generated import inference_pb2_grpc as pb_grpc
from tests.e2e.arms import GOOD, MODEL, arm_model
from tests.e2e.test_deployments import push_arms
from tests.e2e.test_end_to_end import create_key

SPARE = "spare"
SLOW = "slow"
QUEUE = 40
"""Requests that may wait per model version: more than the mixed-load test sends at once."""
ENV = {
    "MDEPLOY_RATE_LIMIT_PREDICT": "100000/minute",
    "MDEPLOY_RATE_LIMIT_ADMIN": "100000/minute",
    # With one backend call per version at a time (the default for one server), arrivals
    # meanwhile wait up to this long to go together.
    "MDEPLOY_BATCH_MAX_DELAY_MS": "100",
    "MDEPLOY_GRPC_MAX_MESSAGE_BYTES": str(1024 * 1024),
    "MDEPLOY_BATCH_MAX_QUEUE": str(QUEUE),
}
PER_PROTOCOL = 16


@dataclass
class Door:
    gateway: GatewayProcess
    server: ServerProcess
    server_token: dict[str, str]
    versions: dict[str, str]
    key: str

    @property
    def address(self) -> str:
        return self.gateway.grpc_address

    def client(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.address)


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    token_file = tmp_path_factory.mktemp("token") / "server-token"
    token = ensure_token(token_file)
    args = ["--grpc-port", "0", "--model-control-mode", "explicit", "--auth-token-file", str(token_file)]
    server = start_server_process(args)
    data_dir = tmp_path_factory.mktemp("grpc-gateway")
    backend = f"grpc://{server.address}?token_file={token_file}"
    gateway = start_gateway_process(data_dir, [backend], grpc_port=free_port(), env=ENV)
    try:
        versions = push_arms(gateway, tmp_path_factory.mktemp("arms"))
        key = create_key(gateway, "predict", "feedback")
        yield Door(gateway, server, dict(token_metadata(token)), versions, key)
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def arms_input(rows: list[list[float]] | None = None) -> list[triton.InferInput]:
    data = np.array(rows or [GOOD], np.float32)
    tensor = triton.InferInput("x", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return [tensor]


def refused(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_model_infer_answers_with_the_version_and_the_request_id(door: Door) -> None:
    client = door.client()
    result = client.infer(MODEL, arms_input([GOOD, [3.0, 4.0]]), headers=bearer(door.key))
    np.testing.assert_allclose(result.as_numpy("y"), [GOOD, [3.0, 4.0]])
    response = result.get_response()
    assert response.model_version == door.versions["a"]  # the live version: the model's first
    assert len(response.parameters["x-request-id"].string_param) == 32
    named = client.infer(
        MODEL, arms_input(), model_version=door.versions["b"], headers={"x-api-key": door.key}
    )
    assert named.get_response().model_version == door.versions["b"]  # a staged version, named


def test_a_request_id_sent_in_metadata_comes_back(door: Door) -> None:
    headers = {**bearer(door.key), "x-request-id": "my-request-7"}
    result = door.client().infer(MODEL, arms_input(), headers=headers)
    assert result.get_response().parameters["x-request-id"].string_param == "my-request-7"


def test_keys_are_checked_with_the_http_answers_messages(door: Door) -> None:
    client = door.client()
    missing = refused(lambda: client.infer(MODEL, arms_input()))
    assert missing.status() == "StatusCode.UNAUTHENTICATED"
    assert "missing API key" in missing.message()
    unknown = refused(
        lambda: client.infer(MODEL, arms_input(), headers=bearer("mdk_0123456789abcdef_" + "x" * 43))
    )
    assert unknown.status() == "StatusCode.UNAUTHENTICATED"
    assert "unknown API key" in unknown.message()
    other_model = create_key(door.gateway, "predict", models=["digits"])
    denied = refused(lambda: client.infer(MODEL, arms_input(), headers=bearer(other_model)))
    assert denied.status() == "StatusCode.PERMISSION_DENIED"
    assert f"may not use model '{MODEL}'" in denied.message()
    feedback_only = create_key(door.gateway, "feedback")
    wrong_scope = refused(lambda: client.get_model_metadata(MODEL, headers=bearer(feedback_only)))
    assert wrong_scope.status() == "StatusCode.PERMISSION_DENIED"
    assert "lacks the 'predict' scope" in wrong_scope.message()


def test_bad_requests_get_not_found_and_invalid_argument(door: Door) -> None:
    client = door.client()
    unknown = refused(lambda: client.infer("nosuchmodel", arms_input(), headers=bearer(door.key)))
    assert unknown.status() == "StatusCode.NOT_FOUND"
    assert "nosuchmodel" in unknown.message()
    wrong = np.zeros((1, 3), np.float32)
    tensor = triton.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(wrong)
    bad = refused(lambda: client.infer(MODEL, [tensor], headers=bearer(door.key)))
    assert bad.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'x'" in bad.message()


def test_metadata_config_and_readiness_for_a_model_the_key_may_use(door: Door) -> None:
    client = door.client()
    assert client.is_server_live()  # no key needed, as /v2/health/live
    assert client.is_server_ready()
    headers = bearer(door.key)
    assert client.is_model_ready(MODEL, headers=headers)
    assert not client.is_model_ready("nosuchmodel", headers=headers)
    metadata = client.get_model_metadata(MODEL, headers=headers)
    assert metadata.name == MODEL
    assert sorted(metadata.versions) == sorted(door.versions.values())
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("x", "FP32", [-1, 2])]
    config = client.get_model_config(MODEL, headers=headers).config
    assert config.name == MODEL
    assert config.max_batch_size > 0
    server = client.get_server_metadata(headers=headers)
    assert server.name == "mdeploy"
    assert "statistics" in server.extensions


def test_statistics_come_from_the_backends(door: Door) -> None:
    client = door.client()
    headers = bearer(door.key)
    client.infer(MODEL, arms_input(), model_version=door.versions["b"], headers=headers)
    stats = client.get_inference_statistics(MODEL, door.versions["b"], headers=headers)
    (entry,) = stats.model_stats
    assert entry.name == MODEL
    assert entry.inference_count >= 1


def test_the_stream_authorises_each_message_and_reports_errors_in_the_stream(door: Door) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = door.client()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=bearer(door.key))
    try:
        client.async_stream_infer(MODEL, arms_input(), request_id="one")
        client.async_stream_infer("nosuchmodel", arms_input(), request_id="two")
        client.async_stream_infer(MODEL, arms_input([[5.0, 6.0]]), request_id="three")
        got = [answers.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
    results = {r.get_response().id: r.as_numpy("y").tolist() for r, e in got if e is None}
    assert results == {"one": [GOOD], "three": [[5.0, 6.0]]}
    errors = [e for r, e in got if e is not None]
    assert len(errors) == 1
    assert "nosuchmodel" in errors[0].message()


def slow_model(size: int = 512, rounds: int = 64) -> onnx.ModelProto:
    """y = x, after ``rounds`` products of a size x size matrix scaled by max(x): a backend call
    takes tens of milliseconds whatever its batch, so requests that arrive meanwhile queue."""
    matrix = np.random.default_rng(3).uniform(0, 1 / size, (size, size)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
        helper.make_node("Mul", ["m", "top"], ["p0"]),
    ]
    for step in range(rounds):
        nodes.append(helper.make_node("MatMul", [f"p{step}", "m"], [f"p{step + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"p{rounds}"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["x", "nothing"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        SLOW,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            numpy_helper.from_array(matrix, "m"),
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def push(door: Door, package: Path) -> str:
    answer = httpx.post(
        f"{door.gateway.url}/v1/admin/packages",
        content=package.read_bytes(),
        headers={**bearer(door.gateway.admin_key), "Content-Type": "application/octet-stream"},
        timeout=120,
    )
    assert answer.status_code in (200, 201), answer.text  # 200: that package is live already
    version: str = answer.json()["version"]
    return version


def batch_sizes(door: Door, model: str) -> Counter[int]:
    """Backend calls of ``model`` by batch size, as mdeploy-server counts them."""
    server = triton.InferenceServerClient(door.server.address)
    stats = server.get_inference_statistics(model, headers=door.server_token)
    return Counter({b.batch_size: b.compute_infer.count for s in stats.model_stats for b in s.batch_stats})


@pytest.fixture(scope="module")
def slow(door: Door, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The slow model, pushed: its backend calls take tens of milliseconds."""
    package = tmp_path_factory.mktemp("slow") / "slow.pkg"
    samples = {"x": np.array([[1.0, 2.0]], np.float32)}
    build(slow_model(), package, name=SLOW, samples=samples, description="slow", code_dir=None)
    return push(door, package)


def test_http_and_grpc_requests_go_to_the_backend_in_the_same_calls(door: Door, slow: str) -> None:
    before = batch_sizes(door, SLOW)
    start = threading.Barrier(2 * PER_PROTOCOL)

    def over_http() -> None:
        with httpx.Client(base_url=door.gateway.url, headers=bearer(door.key), timeout=30) as client:
            start.wait()
            assert client.post(f"/v1/models/{SLOW}:predict", json={"instances": [GOOD]}).status_code == 200

    def over_grpc() -> None:
        client = door.client()
        start.wait()
        client.infer(SLOW, arms_input(), headers=bearer(door.key))

    threads = [threading.Thread(target=f) for f in (over_http, over_grpc) for _ in range(PER_PROTOCOL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    new = batch_sizes(door, SLOW) - before
    assert sum(size * calls for size, calls in new.items()) == 2 * PER_PROTOCOL
    # A call with more rows than either protocol sent carried requests of both.
    assert max(new) > PER_PROTOCOL, new


def test_a_bandit_learns_from_feedback_on_grpc_served_requests(door: Door) -> None:
    a, b = door.versions["a"], door.versions["b"]
    admin = bearer(door.gateway.admin_key)
    http = httpx.Client(base_url=door.gateway.url, timeout=30)
    policy = {"kind": "epsilon-greedy", "versions": [a, b], "epsilon": 0.1}
    rolled = http.put(f"/v1/admin/deployments/{MODEL}", json={"policy": policy}, headers=admin)
    assert rolled.status_code == 200, rolled.text
    client = door.client()
    served = []
    for _ in range(200):
        response = client.infer(MODEL, arms_input(), headers=bearer(door.key)).get_response()
        request_id = response.parameters["x-request-id"].string_param
        reward = 1.0 if response.model_version == b else 0.0
        body = {"request_id": request_id, "reward": reward}
        counted = http.post(f"/v1/models/{MODEL}/feedback", json=body, headers=bearer(door.key))
        assert counted.status_code == 200, counted.text
        assert counted.json()["version"] == response.model_version
        served.append(response.model_version)
    arms = {
        arm["version"]: arm
        for arm in http.get(f"/v1/admin/deployments/{MODEL}", headers=admin).json()["arms"]
    }
    assert arms[b]["rewards"] == served.count(b)
    assert arms[b]["mean_reward"] == 1.0
    assert served[-100:].count(b) >= 80
    pinned = {"policy": {"kind": "pinned", "versions": [door.versions["faulty"]]}}
    assert http.put(f"/v1/admin/deployments/{MODEL}", json=pinned, headers=admin).status_code == 200
    http.close()


def test_the_asyncio_client_works_unchanged(door: Door) -> None:
    async def call() -> list[list[float]]:
        async with triton_aio.InferenceServerClient(door.address) as client:
            result = await client.infer(MODEL, arms_input(), headers=bearer(door.key))
            return result.as_numpy("y").tolist()  # type: ignore[no-any-return]

    assert asyncio.run(call()) == [GOOD]


def test_a_routing_key_in_metadata_keeps_a_caller_on_one_version(door: Door) -> None:
    a, b = door.versions["a"], door.versions["b"]
    admin = bearer(door.gateway.admin_key)
    http = httpx.Client(base_url=door.gateway.url, timeout=30)
    canary = {"policy": {"kind": "canary", "versions": [a, b], "weights": {a: 50, b: 50}}}
    assert http.put(f"/v1/admin/deployments/{MODEL}", json=canary, headers=admin).status_code == 200
    client = door.client()
    for key in ("user-1", "user-2", "user-3"):
        headers = {**bearer(door.key), "x-routing-key": key}
        seen = {
            client.infer(MODEL, arms_input(), headers=headers).get_response().model_version for _ in range(10)
        }
        assert len(seen) == 1, (key, seen)
    too_long = refused(
        lambda: client.infer(MODEL, arms_input(), headers={**bearer(door.key), "x-routing-key": "k" * 300})
    )
    assert too_long.status() == "StatusCode.INVALID_ARGUMENT"
    pinned = {"policy": {"kind": "pinned", "versions": [door.versions["faulty"]]}}
    assert http.put(f"/v1/admin/deployments/{MODEL}", json=pinned, headers=admin).status_code == 200
    http.close()


def test_grpc_requests_are_counted_with_their_protocol(door: Door) -> None:
    door.client().infer(MODEL, arms_input(), headers=bearer(door.key))
    text = httpx.get(f"{door.gateway.url}/metrics", timeout=10).text
    assert any(
        'route="grpc"' in line and line.startswith("mdeploy_requests_total") for line in text.splitlines()
    )


def test_messages_over_the_bound_are_refused_and_the_door_keeps_serving(door: Door) -> None:
    big = np.zeros((200_000, 2), np.float32)  # 1.6 MB, over the 1 MiB bound set above
    tensor = triton.InferInput("x", list(big.shape), "FP32")
    tensor.set_data_from_numpy(big)
    over = refused(lambda: door.client().infer(MODEL, [tensor], headers=bearer(door.key)))
    assert over.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert door.client().infer(MODEL, arms_input(), headers=bearer(door.key)).as_numpy("y") is not None


def limited_key(door: Door, rate_limit: str) -> str:
    settings = GatewaySettings(data_dir=door.gateway.data_dir)
    return with_keys(settings, lambda keys: keys.create(["predict"], rate_limit=rate_limit)).key


def test_one_rate_limit_budget_across_http_and_grpc(door: Door) -> None:
    limited = limited_key(door, "3/minute")
    door_client = door.client()
    http = httpx.post(
        f"{door.gateway.url}/v1/models/{MODEL}:predict",
        json={"instances": [GOOD]},
        headers=bearer(limited),
        timeout=30,
    )
    assert http.status_code == 200
    assert http.headers["x-ratelimit-remaining"] == "2"
    for _ in range(2):
        door_client.infer(MODEL, arms_input(), headers=bearer(limited))
    with grpc.insecure_channel(door.address) as channel:
        request = pb.ModelInferRequest(model_name=MODEL)
        codecs.encode_input(request, "x", np.array([GOOD], np.float32))
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                request, metadata=tuple(bearer(limited).items())
            )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Rate limit exceeded" in (caught.value.details() or "")
    trailing = {item.key: item.value for item in caught.value.trailing_metadata() or ()}
    assert int(trailing["retry-after"]) >= 1
    again = httpx.post(
        f"{door.gateway.url}/v1/models/{MODEL}:predict", json={"instances": [GOOD]}, headers=bearer(limited)
    )
    assert again.status_code == 429


def test_a_deadline_passed_while_queued_drops_the_request_before_any_backend_call(
    door: Door, slow: str
) -> None:
    before = batch_sizes(door, SLOW)
    client = door.client()
    first = threading.Thread(target=lambda: client.infer(SLOW, arms_input(), headers=bearer(door.key)))
    first.start()
    deadline = time.monotonic() + 30
    while door_in_flight(door) == 0:  # the first call holds the backend (one call at a time)
        assert first.is_alive(), "the first call ended before it was seen in flight"
        assert time.monotonic() < deadline
    late = refused(
        lambda: door.client().infer(SLOW, arms_input(), headers=bearer(door.key), client_timeout=0.01)
    )
    assert late.status() == "StatusCode.DEADLINE_EXCEEDED"
    first.join()
    assert batch_sizes(door, SLOW) - before == Counter({1: 1})  # the late one never reached the server


def test_a_full_queue_is_resource_exhausted_with_retry_after(door: Door, slow: str) -> None:
    codes: Counter[grpc.StatusCode] = Counter()
    retry_after: list[str] = []
    request = pb.ModelInferRequest(model_name=SLOW)
    codecs.encode_input(request, "x", np.array([GOOD], np.float32))
    start = threading.Barrier(2 * QUEUE)

    def call() -> None:
        with grpc.insecure_channel(door.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            start.wait()
            try:
                stub.ModelInfer(request, metadata=tuple(bearer(door.key).items()), timeout=60)
                codes[grpc.StatusCode.OK] += 1
            except grpc.RpcError as error:
                codes[error.code()] += 1
                retry_after.extend(
                    str(m.value) for m in error.trailing_metadata() or () if m.key == "retry-after"
                )

    threads = [threading.Thread(target=call) for _ in range(2 * QUEUE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes[grpc.StatusCode.OK] >= QUEUE
    assert len(retry_after) == codes[grpc.StatusCode.RESOURCE_EXHAUSTED]


def door_in_flight(door: Door) -> float:
    """Backend calls in flight, from the gateway's /metrics."""
    text = httpx.get(f"{door.gateway.url}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("mdeploy_backend_in_flight")
    )


def test_the_clients_deadline_is_honoured(door: Door) -> None:
    late = refused(
        lambda: door.client().infer(MODEL, arms_input(), headers=bearer(door.key), client_timeout=1e-4)
    )
    assert late.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert door.client().infer(MODEL, arms_input(), headers=bearer(door.key)).as_numpy("y") is not None


def test_the_repository_index_shows_each_key_its_models(door: Door) -> None:
    client = door.client()
    every = client.get_model_repository_index(headers=bearer(door.gateway.admin_key))
    assert {(m.name, m.state) for m in every.models} >= {(MODEL, "READY")}
    digits_only = create_key(door.gateway, "predict", models=["digits"])
    assert not client.get_model_repository_index(headers=bearer(digits_only)).models


def push_spare(door: Door, directory: Path) -> str:
    """A one-version model of its own, for the tests that take models off the backends."""
    package = directory / "spare.pkg"
    samples = {"x": np.array([[1.0, 2.0]], np.float32)}
    build(arm_model(faulty=False), package, name=SPARE, samples=samples, description="spare", code_dir=None)
    return push(door, package)


def test_load_and_unload_need_the_admin_scope_and_go_through_the_registry(door: Door, tmp_path: Path) -> None:
    version = push_spare(door, tmp_path)
    client = door.client()
    stolen = refused(lambda: client.load_model("intruder", headers=bearer(door.key)))
    assert stolen.status() == "StatusCode.PERMISSION_DENIED"
    assert refused(lambda: client.unload_model(SPARE, headers=bearer(door.key))).status() == (
        "StatusCode.PERMISSION_DENIED"
    )
    admin = bearer(door.gateway.admin_key)
    client.unload_model(SPARE, headers=admin)
    assert not client.is_model_ready(SPARE, headers=admin)
    index = client.get_model_repository_index(headers=admin)
    assert [(m.version, m.state) for m in index.models if m.name == SPARE] == [(version, "UNAVAILABLE")]
    client.load_model(SPARE, headers=admin)  # the newest deleted version comes back
    assert client.is_model_ready(SPARE, headers=admin)
    assert client.infer(SPARE, arms_input(), headers=admin).get_response().model_version == version
    audit = httpx.get(
        f"{door.gateway.url}/v1/admin/audit", params={"model": SPARE}, headers=admin, timeout=30
    ).json()["events"]
    assert [(e["action"], e["reason"]) for e in audit] == [
        ("go-live", f"version {version} is the model's first"),  # loaded again: it serves again
        ("restore", ""),
        ("delete", "RepositoryModelUnload over gRPC"),
        ("repoint", "RepositoryModelUnload over gRPC"),  # its traffic went first
        ("go-live", f"version {version} is the model's first"),
        ("push", ""),
    ]
    assert {e["actor"] for e in audit} == {f"key:{door.gateway.admin_key.split('_')[1]}"}
    unknown = refused(lambda: client.load_model("intruder", headers=admin))
    assert unknown.status() == "StatusCode.NOT_FOUND"
    # The server logs who changed its models: only the token holder (the gateway) can.
    assert f"model {SPARE} unloaded at the request of the token holder at ipv4:127.0.0.1:" in door.server.log


def test_the_inference_server_behind_answers_only_to_the_gateway(door: Door) -> None:
    direct = triton.InferenceServerClient(door.server.address)
    bypass = refused(lambda: direct.infer(MODEL, arms_input()))
    assert bypass.status() == "StatusCode.UNAUTHENTICATED"
    intruder = refused(lambda: direct.load_model("intruder"))
    assert intruder.status() == "StatusCode.UNAUTHENTICATED"
    stolen_key = refused(lambda: direct.infer(MODEL, arms_input(), headers=bearer(door.key)))
    assert stolen_key.status() == "StatusCode.UNAUTHENTICATED"  # API keys mean nothing there
    assert direct.is_model_ready(MODEL, headers=door.server_token)


def test_health_service_and_reflection_describe_the_door(door: Door) -> None:
    with grpc.insecure_channel(door.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        services = {s.name for answer in answers for s in answer.list_services_response.service}
    assert "inference.GRPCInferenceService" in services
    assert "grpc.health.v1.Health" in services


# ---- the same extensions over HTTP, as tritonclient.http calls them ----


def test_http_lists_only_extensions_that_answer(door: Door) -> None:
    client = triton_http.InferenceServerClient(door.gateway.url.removeprefix("http://"))
    headers = bearer(door.key)
    assert set(client.get_server_metadata(headers=headers)["extensions"]) == {
        "binary_tensor_data",
        "model_repository",
        "statistics",
    }
    client.infer(MODEL, [http_input()], model_version=door.versions["b"], headers=headers)
    stats = client.get_inference_statistics(MODEL, door.versions["b"], headers=headers)["model_stats"]
    assert stats[0]["name"] == MODEL
    assert stats[0]["inference_count"] >= 1
    assert isinstance(stats[0]["inference_stats"]["success"]["ns"], int)
    everything = client.get_inference_statistics(headers=headers)["model_stats"]
    assert {entry["name"] for entry in everything} >= {MODEL}
    index = client.get_model_repository_index(headers=headers)
    assert {(entry["name"], entry["state"]) for entry in index} >= {(MODEL, "READY")}
    digits_only = create_key(door.gateway, "predict", models=["digits"])
    assert client.get_model_repository_index(headers=bearer(digits_only)) == []


def test_http_load_and_unload_are_admin_only_and_audited(door: Door, tmp_path: Path) -> None:
    version = push_spare(door, tmp_path)
    client = triton_http.InferenceServerClient(door.gateway.url.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="lacks the 'admin' scope"):
        client.unload_model(SPARE, headers=bearer(door.key))
    admin = bearer(door.gateway.admin_key)
    client.unload_model(SPARE, headers=admin)
    assert not client.is_model_ready(SPARE, headers=admin)
    client.load_model(SPARE, headers=admin)
    assert client.is_model_ready(SPARE, version, headers=admin)
    audit = httpx.get(
        f"{door.gateway.url}/v1/admin/audit", params={"model": SPARE, "limit": 4}, headers=admin, timeout=30
    ).json()["events"]
    assert [(e["action"], e["reason"]) for e in audit] == [
        ("go-live", f"version {version} is the model's first"),
        ("restore", ""),
        ("delete", "RepositoryModelUnload over HTTP"),
        ("repoint", "RepositoryModelUnload over HTTP"),
    ]


def http_input() -> triton_http.InferInput:
    tensor = triton_http.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.array([GOOD], np.float32))
    return tensor
