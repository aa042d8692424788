"""A hanging inference server and SIGTERM under load: deadlines, marking down, draining.

A real ``mdeploy-server`` is frozen with SIGSTOP: its socket still accepts, nothing answers,
as when a process hangs. SIGCONT brings it back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.process import GatewayProcess, start_gateway_process
from tests.e2e.arms import GOOD, MODEL
from tests.e2e.test_deployments import push_arms, wait_for

PREDICT = f"/v1/models/{MODEL}:predict"


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    process = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    yield process
    os.kill(process.process.pid, signal.SIGCONT)
    process.stop(timeout_s=10)


def _gauge(gateway: GatewayProcess, name: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_a_hanging_backend_gets_504_within_the_deadline_and_is_marked_down(
    tmp_path: Path, server: ServerProcess
) -> None:
    env = {"MDEPLOY_BACKEND_TIMEOUT_S": "1.0", "MDEPLOY_HEALTH_INTERVAL_S": "0.2"}
    gateway = start_gateway_process(tmp_path / "gateway", [server.address], env=env)
    try:
        push_arms(gateway, tmp_path)
        headers = {"Authorization": f"Bearer {gateway.admin_key}"}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as http:
            assert http.post(PREDICT, json={"instances": [GOOD]}).status_code == 200
            os.kill(server.process.pid, signal.SIGSTOP)
            started = time.monotonic()
            hung = http.post(PREDICT, json={"instances": [GOOD]})
            waited = time.monotonic() - started
            assert hung.status_code == 504, hung.text
            assert "did not answer in time" in hung.json()["error"]
            assert 0.9 < waited < 3.0
            assert _gauge(gateway, "mdeploy_backend_up") == 0
            assert httpx.get(f"{gateway.url}/v2/health/ready", timeout=10).status_code == 503
            refused = http.post(PREDICT, json={"instances": [GOOD]})  # no healthy backend: at once
            assert refused.status_code == 503

            os.kill(server.process.pid, signal.SIGCONT)
            wait_for(lambda: _gauge(gateway, "mdeploy_backend_up") == 1, "the backend to be marked up again")
            assert http.post(PREDICT, json={"instances": [GOOD]}).status_code == 200
    finally:
        gateway.stop(timeout_s=10)


async def test_sigterm_to_the_gateway_finishes_in_flight_requests_and_refuses_new_ones(
    tmp_path: Path, server: ServerProcess
) -> None:
    # One request per backend call, so the batchers' gauges count requests in flight.
    env = {"MDEPLOY_BATCH_MAX_ROWS": "1", "MDEPLOY_BATCH_CONCURRENCY": "2", "MDEPLOY_SHUTDOWN_GRACE_S": "20"}
    gateway = start_gateway_process(tmp_path / "gateway", [server.address], env=env)
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    try:
        push_arms(gateway, tmp_path)
        os.kill(server.process.pid, signal.SIGSTOP)  # requests pile up in the gateway
        limits = httpx.Limits(max_keepalive_connections=0)  # a connection per request, as new clients
        async with httpx.AsyncClient(
            base_url=gateway.url, headers=headers, timeout=60, limits=limits
        ) as http:
            in_flight = [
                asyncio.create_task(http.post(PREDICT, json={"instances": [GOOD]})) for _ in range(12)
            ]
            deadline = time.monotonic() + 30
            while _gauge(gateway, "mdeploy_queue_length") + _gauge(gateway, "mdeploy_batches_in_flight") < 12:
                assert time.monotonic() < deadline, "the requests did not reach the gateway"
                await asyncio.sleep(0.02)
            gateway.process.send_signal(signal.SIGTERM)
            stopped_listening = time.monotonic() + 10
            while True:  # the listening socket closes first; then new connections are refused
                try:
                    await http.get("/v2/health/live")
                except (httpx.ConnectError, httpx.ReadError):
                    # ReadError: connected into the backlog as the socket closed, then reset.
                    break
                assert time.monotonic() < stopped_listening, "the gateway kept accepting after SIGTERM"
                await asyncio.sleep(0.02)
            os.kill(server.process.pid, signal.SIGCONT)
            answers = await asyncio.gather(*in_flight)
        assert [a.status_code for a in answers] == [200] * 12
        assert gateway.process.wait(timeout=20) == 0
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        gateway.stop(timeout_s=10)
