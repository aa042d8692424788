"""NVIDIA's tritonclient, unchanged, against a real mdeploy-server process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from examples.onnx_models import int64_affine, mlp
from tests.servers.conftest import StartServer

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e


def infer_input(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_health_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mlp")
    assert not client.is_model_ready("missing")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "mdeploy"
    assert "model_repository" in metadata["extensions"]


def test_model_metadata_reads_signature_from_onnx(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("mlp", as_json=True)
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert metadata["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "10"]}]


def test_model_config_is_completed_from_the_model(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("mlp", as_json=True)["config"]
    assert config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == ["64"]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert "dynamic_batching" in config


def test_repository_index_lists_ready_versions(client: triton.InferenceServerClient) -> None:
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["mlp"]["state"] == "READY"
    assert index["int64"]["version"] == "1"


def test_fp32_inference_equals_in_process_onnxruntime(
    client: triton.InferenceServerClient, mlp_model: onnx.ModelProto
) -> None:
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    result = client.infer("mlp", [infer_input("x", x, "FP32")])
    expected = ort.InferenceSession(mlp_model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(result.as_numpy("y"), expected)
    assert result.get_response().model_version == "1"


def test_int64_inference_with_requested_output(client: triton.InferenceServerClient) -> None:
    x = np.arange(12, dtype=np.int64).reshape(3, 4)
    result = client.infer(
        "int64", [infer_input("x", x, "INT64")], outputs=[triton.InferRequestedOutput("total")]
    )
    np.testing.assert_array_equal(result.as_numpy("total"), x.sum(axis=1))
    assert result.as_numpy("y") is None
    both = client.infer("int64", [infer_input("x", x, "INT64")])
    np.testing.assert_array_equal(both.as_numpy("y"), 3 * x + 1)


def test_request_id_is_echoed(client: triton.InferenceServerClient) -> None:
    x = np.zeros((1, 64), np.float32)
    result = client.infer("mlp", [infer_input("x", x, "FP32")], request_id="abc-123")
    assert result.get_response().id == "abc-123"


def test_stream_infer_answers_every_request(client: triton.InferenceServerClient) -> None:
    answers: list[tuple[triton.InferResult | None, InferenceServerException | None]] = []
    client.start_stream(callback=lambda result, error: answers.append((result, error)))
    try:
        for i in range(5):
            x = np.full((1, 4), i, dtype=np.int64)
            client.async_stream_infer("int64", [infer_input("x", x, "INT64")], request_id=str(i))
        client.async_stream_infer(
            "missing", [infer_input("x", np.zeros((1, 4), np.int64), "INT64")], request_id="bad"
        )
    finally:
        client.stop_stream()
    results = {r.get_response().id: r for r, e in answers if r is not None}
    errors = [e for _, e in answers if e is not None]
    assert sorted(results) == ["0", "1", "2", "3", "4"]
    assert results["3"].as_numpy("total").tolist() == [12]
    assert len(errors) == 1
    assert "missing" in str(errors[0])


async def test_concurrent_requests_run_in_fewer_executions(server_address: str) -> None:
    async with triton_aio.InferenceServerClient(server_address) as client:
        before = await client.get_inference_statistics("batching", as_json=True)
        rows = np.random.default_rng(1).standard_normal((64, 1, 64)).astype(np.float32)
        results = await asyncio.gather(
            *(client.infer("batching", [infer_input("x", row, "FP32")]) for row in rows)
        )
        after = await client.get_inference_statistics("batching", as_json=True)
    assert all(r.as_numpy("y").shape == (1, 10) for r in results)
    stats_before, stats_after = before["model_stats"][0], after["model_stats"][0]
    executions = int(stats_after.get("execution_count", 0)) - int(stats_before.get("execution_count", 0))
    inferences = int(stats_after["inference_count"]) - int(stats_before.get("inference_count", 0))
    assert inferences == 64
    assert 1 <= executions < 64, f"64 requests ran in {executions} executions"
    batch_sizes = {int(b["batch_size"]) for b in stats_after["batch_stats"]}
    assert max(batch_sizes) > 1
    assert int(stats_after["inference_stats"]["queue"]["count"]) >= 64


def test_load_with_file_override_into_empty_repository_then_unload(start_server: StartServer) -> None:
    server = start_server("--model-control-mode", "explicit")
    model = mlp([8, 16, 3], seed=7)
    config = {
        "name": "pushed",
        "max_batch_size": 4,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [8]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [3]}],
    }
    with triton.InferenceServerClient(server.address) as client:
        assert client.get_model_repository_index(as_json=True) == {}
        client.load_model(
            "pushed", config=json.dumps(config), files={"file:1/model.onnx": model.SerializeToString()}
        )
        assert client.is_model_ready("pushed")
        x = np.ones((2, 8), np.float32)
        result = client.infer("pushed", [infer_input("x", x, "FP32")])
        expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_array_equal(result.as_numpy("y"), expected)
        client.unload_model("pushed")
        assert not client.is_model_ready("pushed")
        with pytest.raises(InferenceServerException) as error:
            client.infer("pushed", [infer_input("x", x, "FP32")])
        assert error.value.status() == "StatusCode.NOT_FOUND"


def test_inference_statistics_count_rows_and_executions(client: triton.InferenceServerClient) -> None:
    x = np.zeros((3, 4), np.int64)
    before = client.get_inference_statistics("int64", as_json=True)["model_stats"][0]
    client.infer("int64", [infer_input("x", x, "INT64")])
    after = client.get_inference_statistics("int64", as_json=True)["model_stats"][0]
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 3
    assert int(after["execution_count"]) - int(before.get("execution_count", 0)) == 1
    assert int(after["inference_stats"]["compute_infer"]["ns"]) > 0
    assert any(b["batch_size"] == "3" for b in after["batch_stats"])


def test_model_repository_folder_without_config_is_served(tmp_path: Path, start_server: StartServer) -> None:
    onnx.save(int64_affine(), tmp_path / "model.onnx")
    (tmp_path / "repo" / "auto" / "3").mkdir(parents=True)
    (tmp_path / "model.onnx").rename(tmp_path / "repo" / "auto" / "3" / "model.onnx")
    server = start_server("--model-repository", str(tmp_path / "repo"))
    with triton.InferenceServerClient(server.address) as client:
        assert client.is_model_ready("auto", "3")
        result = client.infer("auto", [infer_input("x", np.ones((1, 4), np.int64), "INT64")])
        assert result.as_numpy("total").tolist() == [4]


@pytest.mark.parametrize("inline_us", ["0", "1000000"], ids=["worker thread", "inline"])
def test_both_execution_paths_answer_exactly(
    repository: Path, start_server: StartServer, mlp_model: onnx.ModelProto, inline_us: str
) -> None:
    server = start_server("--model-repository", str(repository), "--inline-batch-us", inline_us)
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    with triton.InferenceServerClient(server.address) as client:
        result = client.infer("mlp", [infer_input("x", x, "FP32")])
    expected = ort.InferenceSession(mlp_model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(result.as_numpy("y"), expected)
