"""Execution providers: which one each loaded version really runs on, and no silent fallback.

The CPU tests run everywhere; the ``gpu`` ones need onnxruntime's CUDA provider and are skipped
with the reason where it is absent (CI has no GPU; ``loadtests/gpu_check.sh`` runs on one).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton

from core.errors import ModelLoadError
from core.server_process import server_command
from examples.onnx_models import mlp, write_version
from protos.generated import model_config_pb2 as mc
from servers import runtime
from tests.servers.conftest import StartServer

ROOT = Path(__file__).resolve().parents[2]

needs_cuda = pytest.mark.skipif(
    not runtime.cuda_available(),
    reason="onnxruntime has no CUDAExecutionProvider here (install mdeploy[gpu] on a machine with a GPU)",
)


@pytest.fixture
def configless_repository(tmp_path: Path) -> Path:
    """One model without config.pbtxt: the server derives batching from the device it runs on."""
    write_version(tmp_path, "mlp", 1, mlp([16, 8, 4], seed=2))
    return tmp_path


def _parameters(config: mc.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def test_model_config_reports_the_cpu_provider_in_use(
    start_server: StartServer, configless_repository: Path
) -> None:
    server = start_server("--model-repository", str(configless_repository), "--device", "cpu")
    with triton.InferenceServerClient(server.address) as client:
        config = client.get_model_config("mlp", as_json=True)["config"]
    assert config["parameters"]["execution_provider"]["string_value"] == "CPUExecutionProvider"
    assert config["parameters"]["execution_providers"]["string_value"] == "CPUExecutionProvider"
    assert config["max_batch_size"] == 64  # the CPU default: larger batches gain nothing there


def test_cpu_instance_group_stays_on_the_cpu_whatever_the_device() -> None:
    config = mc.ModelConfig(name="m")
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU)
    assert runtime.placement("cuda:1", config) == runtime.Placement("cpu", 1, True)
    assert runtime.providers_for("cuda:1", config) == ["CPUExecutionProvider"]


def test_session_that_dropped_a_requested_gpu_is_refused() -> None:
    where = runtime.Placement("cuda", 0, explicit=True)
    wanted: list[runtime.Provider] = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    with pytest.raises(ModelLoadError, match="could not start CUDAExecutionProvider and would run on CPU"):
        runtime.check_providers("m", where, wanted, ["CPUExecutionProvider"])


def test_auto_device_warns_when_cuda_fails_and_serves_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    where = runtime.Placement("cuda", 0, explicit=False)
    wanted: list[runtime.Provider] = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING, logger="servers.runtime"):
        runtime.check_providers("m", where, wanted, ["CPUExecutionProvider"])
    assert "could not start CUDAExecutionProvider" in caplog.text
    assert "serving on the CPU" in caplog.text


def test_dropped_tensorrt_is_refused_even_under_auto() -> None:
    where = runtime.Placement("cuda", 0, explicit=False)
    wanted: list[runtime.Provider] = [
        ("TensorrtExecutionProvider", {}),
        ("CUDAExecutionProvider", {"device_id": 0}),
        "CPUExecutionProvider",
    ]
    with pytest.raises(ModelLoadError, match="could not start TensorrtExecutionProvider"):
        runtime.check_providers("m", where, wanted, ["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_tensorrt_goes_before_cuda_with_an_engine_cache(tmp_path: Path) -> None:
    config = mc.ModelConfig(name="m")
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, gpus=[2])
    if not runtime.cuda_available():
        with pytest.raises(ModelLoadError, match="install the `gpu` extra"):
            runtime.providers_for("cpu", config, "tensorrt", tmp_path / "engines")
        return
    providers = runtime.providers_for("cpu", config, "tensorrt", tmp_path / "engines")
    assert [runtime.provider_name(p) for p in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert providers[0][1]["trt_engine_cache_path"] == str(tmp_path / "engines")  # type: ignore[index]
    assert providers[1][1] == {"device_id": 2}


@pytest.mark.skipif(
    "TensorrtExecutionProvider" in runtime.available_providers(), reason="this onnxruntime has TensorRT"
)
@pytest.mark.e2e
def test_tensorrt_flag_without_tensorrt_exits_with_the_fix() -> None:
    done = subprocess.run(
        [*server_command(), "--grpc-port", "0", "--execution-provider", "tensorrt"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "needs onnxruntime's TensorrtExecutionProvider" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
def test_importing_the_server_without_a_runtime_names_the_extras() -> None:
    # None in sys.modules makes `import onnxruntime` fail as it does where no wheel is installed.
    code = "import sys; sys.modules['onnxruntime'] = None; import servers.app"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "RuntimeMissing: onnxruntime is not installed" in last
    assert "pip install 'mdeploy[cpu]'" in last
    assert "pip install 'mdeploy[gpu]'" in last


@pytest.mark.gpu
@needs_cuda
def test_cuda_device_serves_on_cuda_with_the_gpu_batch_default(
    start_server: StartServer, configless_repository: Path
) -> None:
    server = start_server("--model-repository", str(configless_repository), "--device", "cuda:0")
    rows = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    with triton.InferenceServerClient(server.address) as client:
        config = client.get_model_config("mlp", as_json=True)["config"]
        x = triton.InferInput("x", list(rows.shape), "FP32")
        x.set_data_from_numpy(rows)
        served = client.infer("mlp", [x]).as_numpy("y")
    assert config["parameters"]["execution_provider"]["string_value"] == "CUDAExecutionProvider"
    assert config["parameters"]["device_id"]["string_value"] == "0"
    assert config["max_batch_size"] == 1024
    expected = ort.InferenceSession(
        str(configless_repository / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    ).run(None, {"x": rows})[0]
    assert served is not None
    np.testing.assert_allclose(served, expected, rtol=1e-3, atol=1e-4)
