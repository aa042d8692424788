"""A real stack for fuzzing: one ``mdeploy-server``, one gateway process, the ``arms`` model pushed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.auth.keys import with_keys
from gateway.process import GatewayProcess, start_gateway_process
from gateway.settings import GatewaySettings
from tests.e2e.arms import build_arm_packages

# Fuzzing sends well over a thousand requests a minute with one key: no 429s in the way.
FUZZ_ENV = {
    "MDEPLOY_RATE_LIMIT_PREDICT": "1000000/minute",
    "MDEPLOY_RATE_LIMIT_FEEDBACK": "1000000/minute",
    "MDEPLOY_RATE_LIMIT_ADMIN": "1000000/minute",
    "MDEPLOY_AUTH_FAILURES_PER_MINUTE": "1000000",  # negative cases may carry bad keys
}


@dataclass
class FuzzStack:
    server: ServerProcess
    gateway: GatewayProcess
    key: str
    """A key with every scope (predict, feedback, admin)."""
    key_id: str
    versions: list[str]
    """The registry versions of ``arms`` (packages ``a`` and ``b``: both answer ``y = x``)."""

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def admin_key_id(self) -> str:
        """The id of the key ``mdeploy serve`` made (``mdk_<id>_<secret>``)."""
        return self.gateway.admin_key.split("_")[1]


def push(gateway: GatewayProcess, package: bytes) -> str:
    response = httpx.post(
        f"{gateway.url}/v1/admin/packages",
        content=package,
        headers={
            "Authorization": f"Bearer {gateway.admin_key}",
            "Content-Type": "application/octet-stream",
        },
        timeout=120,
    )
    assert response.status_code == 201, response.text
    version: str = response.json()["version"]
    return version


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    server = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    gateway = start_gateway_process(tmp_path_factory.mktemp("fuzz-gateway"), [server.address], env=FUZZ_ENV)
    try:
        # Only the two good arms: the 'faulty' one answers 500 by design for large inputs.
        packages = build_arm_packages(tmp_path_factory.mktemp("arms"))
        versions = [push(gateway, packages[arm].read_bytes()) for arm in ("a", "b")]
        created = with_keys(
            GatewaySettings(data_dir=gateway.data_dir),
            lambda keys: keys.create(["predict", "feedback", "admin"], name="fuzz"),
        )
        yield FuzzStack(server, gateway, created.key, created.record.id, versions)
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)
