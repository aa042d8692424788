"""Whole-system fixtures: real packages, real inference servers, a real gateway process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.process import GatewayProcess, gateway_command, start_gateway_process
from modelpkg import read_package


@dataclass(frozen=True)
class DemoPackage:
    path: Path
    name: str


@pytest.fixture(scope="session")
def demo_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DemoPackage]:
    from examples.digits import build_demo_packages

    paths = build_demo_packages(tmp_path_factory.mktemp("demo"))
    packages = [DemoPackage(path, read_package(path).manifest.name) for path in paths]
    return {"sklearn" if "sklearn" in p.name else "keras": p for p in packages}


def start_servers(count: int) -> list[ServerProcess]:
    return [
        start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"]) for _ in range(count)
    ]


@pytest.fixture(scope="module")
def servers() -> Iterator[list[ServerProcess]]:
    started = start_servers(2)
    yield started
    for server in started:
        server.stop(timeout_s=10)


GATEWAY_ENV = {
    "MDEPLOY_MAX_ROWS_PER_REQUEST": "256",
    "MDEPLOY_MAX_BODY_BYTES": str(1024 * 1024),
    # These modules send hundreds of bad keys from 127.0.0.1 on purpose (tests/e2e/test_auth_floods.py
    # checks the flood guard itself).
    "MDEPLOY_AUTH_FAILURES_PER_MINUTE": "100000",
}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, servers: list[ServerProcess]
) -> Iterator[GatewayProcess]:
    process = start_gateway_process(
        tmp_path_factory.mktemp("gateway"), [s.address for s in servers], env=GATEWAY_ENV
    )
    yield process
    process.stop(timeout_s=10)


def run_cli(
    gateway: GatewayProcess, *args: str, api_key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MDEPLOY_GATEWAY": gateway.url, "MDEPLOY_API_KEY": api_key or gateway.admin_key}
    return subprocess.run(
        [*gateway_command(), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def pushed(gateway: GatewayProcess, demo_packages: dict[str, DemoPackage]) -> dict[str, DemoPackage]:
    for package in demo_packages.values():
        result = run_cli(gateway, "push", str(package.path))
        assert result.returncode == 0, result.stderr
    return demo_packages
