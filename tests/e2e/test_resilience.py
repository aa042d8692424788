"""A replica killed under load loses no request; a restarted replica gets its models back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.server_process import ServerProcess
from gateway.process import GatewayProcess, start_gateway_process
from tests.e2e.conftest import DemoPackage, run_cli, start_servers


@pytest.fixture
def two_replicas(
    tmp_path: Path, demo_packages: dict[str, DemoPackage]
) -> Iterator[tuple[GatewayProcess, list[ServerProcess]]]:
    servers = start_servers(2)
    gateway = start_gateway_process(tmp_path, [s.address for s in servers])
    pushed = run_cli(gateway, "push", str(demo_packages["sklearn"].path))
    assert pushed.returncode == 0, pushed.stderr
    yield gateway, servers
    gateway.stop(timeout_s=10)
    for server in servers:
        server.stop(timeout_s=10)


async def test_killing_a_replica_under_load_loses_no_request(
    two_replicas: tuple[GatewayProcess, list[ServerProcess]], demo_packages: dict[str, DemoPackage]
) -> None:
    gateway, servers = two_replicas
    model = demo_packages["sklearn"].name
    statuses: list[int] = []
    answered = asyncio.Condition()

    async def client(http: httpx.AsyncClient, rows: int) -> None:
        for _ in range(rows):
            response = await http.post(f"/v1/models/{model}:predict", json={"instances": [[1.0] * 64]})
            async with answered:
                statuses.append(response.status_code)
                answered.notify_all()

    async with httpx.AsyncClient(
        base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.admin_key}"}, timeout=60
    ) as http:
        clients = [asyncio.create_task(client(http, 150)) for _ in range(8)]
        async with answered:
            await answered.wait_for(lambda: len(statuses) >= 200)
        servers[0].kill()  # SIGKILL: no drain, in-flight calls fail with UNAVAILABLE
        await asyncio.gather(*clients)
    assert len(statuses) == 8 * 150
    assert set(statuses) == {200}, {code: statuses.count(code) for code in set(statuses)}


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_serve_stops_its_local_inference_server_on_sigterm(tmp_path: Path) -> None:
    gateway = start_gateway_process(tmp_path, [])  # no backends given: it starts its own server
    servers = _children(gateway.process.pid)
    assert servers, "mdeploy serve started no inference server"
    assert gateway.stop(timeout_s=30) == 0
    assert not any(_alive(pid) for pid in servers)
