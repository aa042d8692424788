"""Every bound, at its value and one past it, through a real gateway; a burst past the queue.

At the bound the request is served; one past it gets the bound's error (413 naming the bound,
or 429 with Retry-After for a full queue) and the gateway keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.process import GatewayProcess, start_gateway_process
from tests.e2e.arms import GOOD, MODEL, build_arm_packages
from tests.e2e.test_deployments import push_arms
from tests.gateway.registry_support import described

PREDICT = f"/v1/models/{MODEL}:predict"


@dataclass
class Rig:
    server: ServerProcess
    data_dir: Path
    packages: Path

    def gateway(self, **settings: int) -> GatewayProcess:
        env = {f"MDEPLOY_{name.upper()}": str(value) for name, value in settings.items()}
        return start_gateway_process(self.data_dir, [self.server.address], env=env)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    server = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    data_dir = tmp_path_factory.mktemp("bounds-gateway")
    first = start_gateway_process(data_dir, [server.address])
    try:
        push_arms(first, tmp_path_factory.mktemp("arms"))
    finally:
        first.stop(timeout_s=10)
    yield Rig(server, data_dir, tmp_path_factory.mktemp("more"))
    os.kill(server.process.pid, signal.SIGCONT)
    server.stop(timeout_s=10)


def _client(gateway: GatewayProcess) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.admin_key}"}, timeout=60
    )


def _rows(count: int) -> bytes:
    return orjson.dumps({"instances": [GOOD] * count})


def test_rows_and_body_bytes_at_and_one_past_their_bounds(rig: Rig) -> None:
    gateway = rig.gateway(max_rows_per_request=16, max_body_bytes=2048)
    try:
        with _client(gateway) as http:
            assert http.post(PREDICT, content=_rows(16)).status_code == 200
            over = http.post(PREDICT, content=_rows(17))
            assert over.status_code == 413
            assert "17 rows; the limit is 16" in over.json()["error"]
            body = _rows(1)
            at_limit = body + b" " * (2048 - len(body))  # JSON allows trailing whitespace
            assert http.post(PREDICT, content=at_limit).status_code == 200
            too_big = http.post(PREDICT, content=at_limit + b" ")
            assert too_big.status_code == 413
            assert "2048" in too_big.json()["error"]
            assert http.post(PREDICT, content=_rows(1)).status_code == 200
    finally:
        gateway.stop(timeout_s=10)


def test_elements_per_tensor_at_and_one_past_the_bound(rig: Rig) -> None:
    gateway = rig.gateway(max_elements_per_tensor=40)
    try:
        with _client(gateway) as http:
            assert http.post(PREDICT, content=_rows(20)).status_code == 200  # 20 rows x 2 = 40
            over = http.post(PREDICT, content=_rows(21))
            assert over.status_code == 413
            assert "42 elements; the limit is 40" in over.json()["error"]
    finally:
        gateway.stop(timeout_s=10)


def test_upload_size_at_and_one_past_the_bound(rig: Rig) -> None:
    base = build_arm_packages(rig.packages)["a"]
    exact = described(base, rig.packages / "exact.pkg", "sized to the limit")
    bigger = described(base, rig.packages / "bigger.pkg", "sized to the limit!")
    assert bigger.stat().st_size > exact.stat().st_size
    gateway = rig.gateway(max_upload_bytes=exact.stat().st_size)
    try:
        with _client(gateway) as http:
            upload = {"Content-Type": "application/octet-stream"}
            refused = http.post("/v1/admin/packages", content=bigger.read_bytes(), headers=upload)
            assert refused.status_code == 413, refused.text
            assert str(exact.stat().st_size) in refused.json()["error"]
            accepted = http.post("/v1/admin/packages", content=exact.read_bytes(), headers=upload)
            assert accepted.status_code == 201, accepted.text
    finally:
        gateway.stop(timeout_s=10)


async def _until_a_batch_is_in_flight(http: httpx.AsyncClient, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = (await http.get("/metrics")).text.splitlines()
        if any(line.startswith("mdeploy_batches_in_flight{") and line.endswith(" 1.0") for line in lines):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no backend call went out")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


async def test_a_burst_of_ten_times_the_queue_gets_429_for_the_excess(rig: Rig) -> None:
    queue = 8
    gateway = rig.gateway(batch_max_queue=queue, batch_concurrency=1, batch_max_rows=1)
    try:
        with _client(gateway) as http:
            assert http.post(PREDICT, content=_rows(1)).status_code == 200
        rss_before = _rss_kib(gateway.process.pid)
        os.kill(rig.server.process.pid, signal.SIGSTOP)  # nothing drains: the queue fills
        headers = {"Authorization": f"Bearer {gateway.admin_key}"}
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=gateway.url, headers=headers, timeout=60, limits=limits
        ) as http:
            # The first call goes out before the rest arrive (on a busy machine the burst could
            # otherwise fill the queue before the batcher has taken it): then 9 are admitted.
            first = asyncio.create_task(http.post(PREDICT, content=_rows(1)))
            await _until_a_batch_is_in_flight(http)
            rest = [asyncio.create_task(http.post(PREDICT, content=_rows(1))) for _ in range(10 * queue - 1)]
            burst = [first, *rest]
            refused = 10 * queue - queue - 1  # the queue and the one call in flight are admitted
            done: set[asyncio.Task[httpx.Response]] = set()
            waiting = set(burst)
            while len(done) < refused:
                finished, waiting = await asyncio.wait(
                    waiting, timeout=30, return_when=asyncio.FIRST_COMPLETED
                )
                assert finished, "the excess was not refused while the backend was stuck"
                done |= finished
            os.kill(rig.server.process.pid, signal.SIGCONT)
            answers = await asyncio.gather(*burst)
            codes = Counter(a.status_code for a in answers)
            assert codes == {200: queue + 1, 429: refused}, codes
            full = next(a for a in answers if a.status_code == 429)
            assert "queue is full (8 waiting)" in full.json()["error"]
            assert full.headers["retry-after"] == "1"
            assert (await http.post(PREDICT, content=_rows(1))).status_code == 200
        assert _rss_kib(gateway.process.pid) - rss_before < 50 * 1024
    finally:
        os.kill(rig.server.process.pid, signal.SIGCONT)
        gateway.stop(timeout_s=10)
