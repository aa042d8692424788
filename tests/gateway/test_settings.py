"""Gateway settings: flags over environment over MDEPLOY_SETTINGS_FILE over defaults."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from gateway.process import gateway_command
from gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]


def test_settings_file_sits_below_the_environment_and_the_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text('port = 9123\nmax_rows_per_request = 5\nrate_limit_admin = "10/minute"\n')
    monkeypatch.setenv("MDEPLOY_SETTINGS_FILE", str(file))
    monkeypatch.setenv("MDEPLOY_PORT", "9200")
    settings = GatewaySettings(rate_limit_admin="20/minute")
    assert settings.port == 9200  # environment over file
    assert settings.max_rows_per_request == 5  # file over default
    assert settings.rate_limit_admin == "20/minute"  # flag over file


def test_json_settings_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "gateway.json"
    file.write_text('{"backends": ["127.0.0.1:9001"], "shutdown_grace_s": 3}')
    monkeypatch.setenv("MDEPLOY_SETTINGS_FILE", str(file))
    settings = GatewaySettings()
    assert settings.backends == ["127.0.0.1:9001"]
    assert settings.shutdown_grace_s == 3


@pytest.mark.e2e
def test_broken_settings_file_stops_serve_with_the_file_named(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text("port = \n")
    done = subprocess.run(
        [*gateway_command(), "serve", "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"MDEPLOY_SETTINGS_FILE": str(file), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert f"invalid gateway settings: {file}" in done.stderr
    assert not (tmp_path / "data").exists()  # nothing made before the settings were read


@pytest.mark.e2e
def test_serve_on_a_busy_port_fails_first_and_makes_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*gateway_command(), "serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in done.stderr
    assert not (tmp_path / "data").exists()  # no admin key made, no inference server started
    assert "inference server listening" not in done.stdout


@pytest.mark.e2e
def test_serve_on_a_busy_grpc_port_fails_first_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [*gateway_command(), "serve", "--data-dir", str(tmp_path / "data"), "--port", "0"]
        done = subprocess.run(
            [*command, "--grpc-port", str(port)], capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in done.stderr
    assert "--grpc-port (or MDEPLOY_GRPC_PORT; 0 turns it off)" in done.stderr
    assert not (tmp_path / "data").exists()


def test_drift_windows_are_durations_and_a_bad_one_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDEPLOY_DRIFT_WINDOWS", '["10s", "1h"]')
    assert GatewaySettings().drift_windows == ["10s", "1h"]
    with pytest.raises(ValueError, match="a drift window is a number and a unit"):
        GatewaySettings(drift_windows=["5 minutes"])
    with pytest.raises(ValueError, match="at least 16"):
        GatewaySettings(webhook_secret="short")
