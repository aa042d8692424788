"""mdeploy-server settings: flags over environment over settings file over defaults."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.errors import ModelLoadError
from core.server_process import server_command
from protos.generated import model_config_pb2 as mc
from servers import runtime
from servers.cli import build_parser, settings_from
from servers.settings import ModelControlMode, ServerSettings


def test_defaults_serve_one_machine() -> None:
    settings = settings_from(build_parser().parse_args([]))
    assert settings.grpc_address == "127.0.0.1"
    assert settings.grpc_port == 8001
    assert settings.model_control_mode is ModelControlMode.NONE
    assert settings.max_receive_message_bytes >= 100 * 1024 * 1024


def test_flag_beats_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "server.toml"
    file.write_text('grpc_port = 9000\ndevice = "cpu"\nintra_op_threads = 3\n')
    monkeypatch.setenv("MDEPLOY_SERVER_GRPC_PORT", "9100")
    monkeypatch.setenv("MDEPLOY_SERVER_INTRA_OP_THREADS", "2")
    settings = settings_from(
        build_parser().parse_args(["--settings-file", str(file), "--intra-op-threads", "1"])
    )
    assert settings.grpc_port == 9100  # environment over file
    assert settings.device == "cpu"  # file over default
    assert settings.intra_op_threads == 1  # flag over environment


def test_json_settings_file_is_read(tmp_path: Path) -> None:
    file = tmp_path / "server.json"
    file.write_text('{"model_control_mode": "explicit", "load_models": ["a", "b"]}')
    settings = settings_from(build_parser().parse_args(["--settings-file", str(file)]))
    assert settings.model_control_mode is ModelControlMode.EXPLICIT
    assert settings.load_models == ["a", "b"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:<n>"),
        (["--grpc-port", "70000"], "less than or equal to 65535"),
        (["--max-receive-message-mb", "0"], "greater than or equal to 1"),
    ],
)
@pytest.mark.e2e
def test_invalid_settings_exit_2_with_a_message(argv: list[str], message: str) -> None:
    result = subprocess.run(
        [*server_command(), *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cuda_device_is_refused_with_the_fix_unless_onnxruntime_has_cuda() -> None:
    if runtime.cuda_available():
        runtime.check_device("cuda:0")
        return
    with pytest.raises(ModelLoadError, match="install the `gpu` extra"):
        runtime.check_device("cuda:0")


def test_providers_follow_device_and_instance_group() -> None:
    config = mc.ModelConfig(name="m")
    assert runtime.providers_for("cpu", config) == ["CPUExecutionProvider"]
    expected_auto = "CUDAExecutionProvider" if runtime.cuda_available() else "CPUExecutionProvider"
    first = runtime.providers_for("auto", config)[0]
    assert (first[0] if isinstance(first, tuple) else first) == expected_auto
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU)
    assert runtime.providers_for("auto", config) == ["CPUExecutionProvider"]


def test_unavailable_execution_accelerator_is_refused() -> None:
    config = mc.ModelConfig(name="m")
    config.optimization.execution_accelerators.cpu_execution_accelerator.add(name="openvino")
    with pytest.raises(ModelLoadError, match="'openvino' is not available"):
        runtime.providers_for("cpu", config)


def test_a_server_without_a_token_stays_on_loopback() -> None:
    with pytest.raises(ValidationError, match=r"refusing to listen on 0\.0\.0\.0 without --auth-token-file"):
        ServerSettings(grpc_address="0.0.0.0")
    assert ServerSettings(grpc_address="::1").grpc_address == "::1"
    assert ServerSettings(grpc_address="0.0.0.0", auth_token_file=Path("t")).grpc_address == "0.0.0.0"


def test_tls_needs_a_certificate_and_its_key_and_mutual_tls_needs_both() -> None:
    with pytest.raises(ValidationError, match="needs both --tls-cert and --tls-key"):
        ServerSettings(tls_cert_file=Path("cert.pem"))
    with pytest.raises(ValidationError, match="mutual TLS"):
        ServerSettings(tls_client_ca_file=Path("ca.pem"))
