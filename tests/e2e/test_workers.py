"""``mdeploy serve --workers 2``: both workers serve on one port; kill -9 of one under load.

Worker pids come from the supervisor's log (``worker N (pid P) ready``); which worker a
connection landed on, from the kernel (``/proc``: the sockets each pid holds). Nothing in the
gateway exists for these tests.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton

from core.ports import free_port
from core.server_process import ServerProcess
from gateway.auth.keys import with_keys
from gateway.process import GatewayProcess, start_gateway_process
from gateway.settings import GatewaySettings
from mdeploy.client import ClientConfig, GatewayClient
from tests.e2e.conftest import DemoPackage, start_servers
from tests.services import RedisServer

MODEL = "digits-sklearn"
READY = re.compile(r"worker (\d+) \(pid (\d+)\) ready")
LEADS = re.compile(r"process (\d+) leads")
ROW = {"instances": [[1.0] * 64]}
CLIENT_THREADS = 6


@dataclass
class Workers:
    gateway: GatewayProcess
    server: ServerProcess
    key: str
    """predict scope; its limit is high: the load must never meet it."""

    @property
    def port(self) -> int:
        return int(self.gateway.url.rsplit(":", 1)[1])

    @property
    def grpc_port(self) -> int:
        return int(self.gateway.grpc_address.rsplit(":", 1)[1])

    def pids(self) -> dict[int, int]:
        """Worker index → the pid that last said it was ready."""
        return {int(index): int(pid) for index, pid in READY.findall(self.gateway.log)}

    def leader(self) -> int:
        leads = LEADS.findall(self.gateway.log)
        return int(leads[-1]) if leads else 0

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateway.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=10
        )


def make_key(data_dir: Path, scopes: list[str], rate_limit: str | None = None) -> str:
    settings = GatewaySettings(data_dir=data_dir)
    return with_keys(settings, lambda keys: keys.create(scopes, rate_limit=rate_limit, name="test")).key


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def workers(
    tmp_path: Path, redis_server: RedisServer, demo_packages: dict[str, DemoPackage]
) -> Iterator[Workers]:
    (server,) = start_servers(1)
    env = {
        "MDEPLOY_RATE_LIMIT_STORAGE": redis_server.uri,
        "MDEPLOY_RATE_LIMIT_PREDICT": "1000000/minute",
        "MDEPLOY_RECONCILE_INTERVAL_S": "1",
        "MDEPLOY_HEALTH_INTERVAL_S": "0.5",
    }
    gateway = start_gateway_process(
        tmp_path, [server.address], grpc_port=free_port(), env=env, extra_args=["--workers", "2"]
    )
    try:
        with GatewayClient(ClientConfig(gateway.url, gateway.admin_key), timeout=httpx.Timeout(300)) as admin:
            admin.push(demo_packages["sklearn"].path)
        rig = Workers(gateway, server, make_key(tmp_path, ["predict"]))
        # Every worker answers once its registry has read the push (deployment_refresh_s).
        wait_for(lambda: all_answer(rig, 20), "every worker to serve the pushed model", 30)
        yield rig
    finally:
        gateway.stop(timeout_s=30)
        server.stop(timeout_s=10)


def all_answer(rig: Workers, connections: int) -> bool:
    """``connections`` fresh connections (spread over the workers by the kernel) all get 200."""
    clients = [rig.client() for _ in range(connections)]
    try:
        return all(c.post(f"/v1/models/{MODEL}:predict", json=ROW).status_code == 200 for c in clients)
    finally:
        for c in clients:
            c.close()


def established(pid: int, port: int) -> int:
    """Established TCP connections that process ``pid`` holds on local ``port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                count += 1
    return count


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_two_workers_answer_on_one_port_over_http_and_grpc(workers: Workers) -> None:
    pids = workers.pids()
    assert len(set(pids.values())) == 2, workers.gateway.log
    http = [workers.client() for _ in range(16)]
    # A subchannel pool of its own per client: one TCP connection each, as separate processes have.
    own = [("grpc.use_local_subchannel_pool", 1)]
    grpc = [triton.InferenceServerClient(workers.gateway.grpc_address, channel_args=own) for _ in range(16)]
    pixels = triton.InferInput("pixels", [1, 64], "FP32")
    pixels.set_data_from_numpy(np.ones((1, 64), np.float32))
    metadata = {"authorization": f"Bearer {workers.key}"}
    try:
        assert {c.post(f"/v1/models/{MODEL}:predict", json=ROW).status_code for c in http} == {200}
        assert {g.infer(MODEL, [pixels], headers=metadata).get_response().model_version for g in grpc} == {
            "1"
        }
        # The kernel spread the connections (open still) over both workers' sockets.
        on_http = {pid: established(pid, workers.port) for pid in pids.values()}
        on_grpc = {pid: established(pid, workers.grpc_port) for pid in pids.values()}
    finally:
        for c in http:
            c.close()
        for g in grpc:
            g.close()
    assert sum(on_http.values()) == 16, on_http
    assert all(on_http.values()), on_http
    assert all(on_grpc.values()), on_grpc

    assert workers.gateway.stop(timeout_s=60) == 0  # SIGTERM: each worker drains, then the supervisor exits
    for index, pid in pids.items():
        assert f"worker {index} (pid {pid}) stopped (exit status 0)" in workers.gateway.log


def test_workers_stop_when_their_supervisor_dies(workers: Workers) -> None:
    pids = workers.pids()
    workers.gateway.kill()  # SIGKILL: no forwarding, only the end of the control sockets

    wait_for(lambda: not any(running(pid) for pid in pids.values()), "the workers to exit", 30)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{workers.gateway.url}/v2/health/live", timeout=5)


def test_workers_share_rate_limits_and_revocations(workers: Workers, tmp_path: Path) -> None:
    limited = make_key(tmp_path, ["predict"], rate_limit="10/minute")
    answers = []
    for _ in range(14):  # a connection each: they land on both workers
        with httpx.Client(base_url=workers.gateway.url, timeout=10) as client:
            headers = {"Authorization": f"Bearer {limited}"}
            answers.append(client.post(f"/v1/models/{MODEL}:predict", json=ROW, headers=headers).status_code)
    assert answers == [200] * 10 + [429] * 4

    with GatewayClient(ClientConfig(workers.gateway.url, workers.gateway.admin_key)) as admin:
        admin.delete_json(f"/v1/admin/keys/{workers.key.split('_')[1]}")
    assert not all_answer(workers, 1)
    statuses = set()
    for _ in range(8):
        with workers.client() as client:
            statuses.add(client.post(f"/v1/models/{MODEL}:predict", json=ROW).status_code)
    assert statuses == {401}


STEADY_ANSWERS = 600
"""Answered requests that make the load steady (about 3 s of it here)."""


@dataclass
class Load:
    """Client threads, each with its own keep-alive connection and one request at a time, as a web
    app's workers call the gateway; no retries: every failure a client would see is counted."""

    rig: Workers
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[tuple[float, str]] = field(default_factory=list)
    """(when, outcome): "200", another status, or the transport error's class name."""

    def run(self) -> None:
        with self.rig.client() as client:
            while not self.stop.is_set():
                try:
                    outcome = str(client.post(f"/v1/models/{MODEL}:predict", json=ROW).status_code)
                except httpx.TransportError as error:
                    outcome = type(error).__name__
                with self.lock:
                    self.answers.append((time.monotonic(), outcome))

    def outcomes(self, since: float = 0.0) -> Counter[str]:
        with self.lock:
            return Counter(outcome for at, outcome in self.answers if at >= since)


def test_a_worker_killed_under_load_is_restarted_and_the_lead_moves(workers: Workers) -> None:
    load = Load(workers)
    threads = [threading.Thread(target=load.run) for _ in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    try:
        # Steady load first: every client has answers behind it before the kill.
        wait_for(lambda: load.outcomes()["200"] >= STEADY_ANSWERS, "steady load")
        before = workers.pids()
        killed = workers.leader()
        assert killed in before.values(), workers.gateway.log
        (index,) = [i for i, pid in before.items() if pid == killed]
        survivor = next(pid for pid in before.values() if pid != killed)
        killed_at = time.monotonic()
        os.kill(killed, signal.SIGKILL)

        wait_for(lambda: workers.pids()[index] != killed, "the supervisor to restart the worker")
        restarted_at = time.monotonic()
        # Load goes on past the restart, so the new worker takes a share of it.
        wait_for(lambda: load.outcomes(since=restarted_at)["200"] >= STEADY_ANSWERS, "load after the restart")
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)

    everything, after_kill = load.outcomes(), load.outcomes(since=killed_at)
    print(
        f"\n{sum(everything.values())} requests from {CLIENT_THREADS} keep-alive clients: "
        f"{dict(everything)}; from the kill on: {dict(after_kill)}; "
        f"worker back after {restarted_at - killed_at:.1f} s"
    )
    failed = {outcome: n for outcome, n in everything.items() if outcome != "200"}
    # No answer is an error; a request in flight on the killed worker's connection may fail at the
    # TCP level (a client without retries sees it): at most one per client connection.
    assert all(not outcome.isdigit() for outcome in failed), failed
    assert sum(failed.values()) <= CLIENT_THREADS, failed
    assert load.outcomes(since=restarted_at)["200"] > 0
    assert "died (killed by SIGKILL)" in workers.gateway.log

    # The lead moved to a living worker, which reconciles: it reloads what a server lost.
    wait_for(lambda: workers.leader() not in (0, killed), "the lead to move", 10)
    leader = workers.leader()
    assert leader in (survivor, workers.pids()[index])
    with triton.InferenceServerClient(workers.server.address) as backend:
        backend.unload_model(MODEL)
        wait_for(lambda: backend.is_model_ready(MODEL), "the new leader to reload the model", 30)
    assert f"[{leader}] gateway.registry.backend_sync: reconcile: {workers.server.address} serves" in (
        workers.gateway.log
    )
    # And the restarted worker takes connections again.
    assert all_answer(workers, 16)
