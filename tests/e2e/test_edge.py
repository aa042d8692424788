"""Envoy in front of two gateways: a gateway killed or stopped under load costs no request.

One inference server, two ``mdeploy serve`` gateways (HTTP and gRPC, one data folder) and the real
Envoy with the configuration ``mdeploy edge-config`` writes, all on 127.0.0.1. Clients send steady
predictions through the edge over HTTP (httpx) and over gRPC (NVIDIA's unchanged
``tritonclient.grpc``) while one gateway dies (SIGKILL) or drains (SIGTERM).
"""

from __future__ import annotations

import asyncio
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from core.ports import free_port
from core.server_process import ServerProcess, start_server_process
from gateway.process import GatewayProcess, start_gateway_process
from mdeploy.cli import main
from mdeploy.edge import GRPC_CLUSTER, HTTP_CLUSTER
from tests.e2e.arms import GOOD, MODEL
from tests.e2e.test_deployments import ENV, push_arms
from tests.envoy import EnvoyProcess, start_envoy

HTTP_CLIENTS = 8
GRPC_CLIENTS = 4
HEALTH_INTERVAL_S = 0.25
UNREACHABLE_TIMEOUT_S = 2.0
"""``--unreachable-timeout-s``, at its lowest: what a slow answer has to outlast."""


@dataclass
class Edge:
    envoy: EnvoyProcess
    gateways: list[GatewayProcess]
    url: str
    grpc_address: str
    key: str


@pytest.fixture(scope="module")
def arms_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    """One inference server and a data folder whose registry holds the ``arms`` model."""
    server = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    data_dir = tmp_path_factory.mktemp("edge-gateways")
    first = start_gateway_process(data_dir, [server.address], env=ENV)
    try:
        push_arms(first, tmp_path_factory.mktemp("arms"))
    finally:
        first.stop(timeout_s=10)
    yield server, data_dir
    server.stop(timeout_s=10)


@pytest.fixture
def edge(arms_registry: tuple[ServerProcess, Path], tmp_path: Path) -> Iterator[Edge]:
    server, data_dir = arms_registry
    env = {**ENV, "MDEPLOY_SHUTDOWN_GRACE_S": "20"}
    gateways = [
        start_gateway_process(data_dir, [server.address], grpc_port=free_port(), env=env) for _ in range(2)
    ]
    envoy = None
    try:
        listen, grpc_listen, admin = (f"127.0.0.1:{free_port()}" for _ in range(3))
        config = tmp_path / "envoy.yaml"
        written = main(
            [
                "edge-config",
                *("--gateways", ",".join(g.url.removeprefix("http://") for g in gateways)),
                *("--grpc-gateways", ",".join(g.grpc_address for g in gateways)),
                *("--listen", listen, "--grpc-listen", grpc_listen, "--admin", admin),
                *("--health-interval-s", str(HEALTH_INTERVAL_S), "-o", str(config)),
                *("--unreachable-timeout-s", str(UNREACHABLE_TIMEOUT_S)),
            ]
        )
        assert written == 0
        envoy = start_envoy(config, admin)
        for cluster in (HTTP_CLUSTER, GRPC_CLUSTER):
            envoy.wait_until(functools.partial(_all_healthy, envoy, cluster), f"both gateways in {cluster}")
        yield Edge(envoy, gateways, f"http://{listen}", grpc_listen, gateways[0].admin_key)
    finally:
        if envoy is not None:
            envoy.stop(timeout_s=10)
        for gateway in gateways:
            gateway.stop(timeout_s=30)


@dataclass
class Tally:
    """Every answer the clients got: when, how long it took, and whether it failed."""

    answers: list[tuple[float, float, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, started: float, error: str | None) -> None:
        with self.lock:
            self.answers.append((started, time.monotonic() - started, error))

    @property
    def count(self) -> int:
        return len(self.answers)

    def failures(self) -> list[str]:
        return [error for _, _, error in self.answers if error is not None]

    def p99_ms(self, since: float, until: float) -> float:
        took = [seconds for started, seconds, _ in self.answers if since <= started <= until]
        return float(np.percentile(took, 99) * 1000) if took else 0.0


class Load:
    """Steady predictions through the edge, HTTP and gRPC at once, until stopped."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.http = Tally()
        self.grpc = Tally()
        self.stopping = threading.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.steady_from = 0.0

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.edge.key}"}
        self.client = httpx.AsyncClient(base_url=self.edge.url, headers=headers, timeout=60)
        self.tasks = [asyncio.create_task(self._http()) for _ in range(HTTP_CLIENTS)]
        self.tasks += [asyncio.create_task(asyncio.to_thread(self._grpc)) for _ in range(GRPC_CLIENTS)]
        await self.until(lambda: self.http.count >= 50 and self.grpc.count >= 50, "the load to flow")
        # What came before was warming up (connections, first batches); from here it is steady.
        self.steady_from = time.monotonic()
        seen = self.http.count + self.grpc.count
        await self.until(lambda: self.http.count + self.grpc.count >= seen + 400, "a steady baseline")

    async def until(self, condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(condition):  # the admin API is called off the clients' loop
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.gather(*self.tasks)
        await self.client.aclose()

    async def _http(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                answer = await self.client.post(f"/v1/models/{MODEL}:predict", json={"instances": [GOOD]})
                error = None if answer.status_code == 200 else f"HTTP {answer.status_code}: {answer.text}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.http.add(started, error)

    def _grpc(self) -> None:
        data = np.array([GOOD], np.float32)
        tensor = triton.InferInput("x", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        headers = {"authorization": f"Bearer {self.edge.key}"}
        with triton.InferenceServerClient(self.edge.grpc_address) as client:
            while not self.stopping.is_set():
                started = time.monotonic()
                try:
                    result = client.infer(MODEL, [tensor], headers=headers, client_timeout=60)
                    answer = result.as_numpy("y")
                    error = None if answer is not None and answer.tolist() == [GOOD] else f"answer {answer}"
                except InferenceServerException as exc:
                    error = f"gRPC {exc.status()}: {exc.message()}"
                self.grpc.add(started, error)


def _host_requests(envoy: EnvoyProcess, cluster: str, address: str, stat: str = "rq_total") -> int:
    text = envoy.admin("GET", "/clusters").text
    prefix = f"{cluster}::{address}::{stat}::"
    return sum(int(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


def _all_healthy(envoy: EnvoyProcess, cluster: str) -> bool:
    return list(envoy.hosts(cluster).values()) == [True, True]


def _taken_out(envoy: EnvoyProcess, cluster: str, address: str) -> bool:
    return not envoy.hosts(cluster)[address]


def _addresses(gateway: GatewayProcess) -> dict[str, str]:
    return {HTTP_CLUSTER: gateway.url.removeprefix("http://"), GRPC_CLUSTER: gateway.grpc_address}


def _report(what: str, load: Load, since: float, until: float, envoy: EnvoyProcess) -> str:
    """One line for the README: requests, failures, p99 before and during the event, retries."""

    def line(name: str, tally: Tally) -> str:
        return (
            f"{name} {tally.count} requests, {len(tally.failures())} failed, p99 "
            f"{tally.p99_ms(load.steady_from, since):.0f} ms before / "
            f"{tally.p99_ms(since, until):.0f} ms during"
        )

    retries = {c: envoy.counter(f"cluster.{c}.upstream_rq_retry") for c in (HTTP_CLUSTER, GRPC_CLUSTER)}
    return (
        f"{what}: {line('HTTP', load.http)}; {line('gRPC', load.grpc)}; Envoy retries {retries}; "
        f"taken out after {until - 1.0 - since:.2f} s"
    )


async def test_edge_spreads_requests_over_both_gateways_and_keeps_the_clients_request_id(edge: Edge) -> None:
    load = Load(edge)
    await load.start()
    answer = await load.client.post(
        f"/v1/models/{MODEL}:predict", json={"instances": [GOOD]}, headers={"X-Request-Id": "client-id-7"}
    )
    await load.stop()
    assert load.http.failures() == []
    assert load.grpc.failures() == []
    for gateway in edge.gateways:
        for cluster, address in _addresses(gateway).items():
            assert _host_requests(edge.envoy, cluster, address) > 0, f"{address} got nothing in {cluster}"
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "client-id-7"  # feedback names what the client sent


async def test_the_edge_drains_gracefully_before_it_stops(edge: Edge) -> None:
    load = Load(edge)
    await load.start()
    assert (await load.client.get("/edge/ready")).status_code == 200
    assert edge.envoy.admin("POST", "/healthcheck/fail").status_code == 200
    assert (await load.client.get("/edge/ready")).status_code == 503  # a balancer in front moves away
    assert edge.envoy.admin("POST", "/drain_listeners?graceful").status_code == 200
    drained = "http.edge_http.downstream_cx_drain_close"
    await load.until(lambda: edge.envoy.counter(drained) > 0, "a client connection closed by the drain")
    await load.stop()
    assert load.http.failures() == []
    assert load.grpc.failures() == []
    assert await asyncio.to_thread(edge.envoy.stop, 10) == 0


async def test_a_killed_gateway_costs_no_request_and_is_taken_out(edge: Edge) -> None:
    dying = edge.gateways[0]
    load = Load(edge)
    await load.start()
    killed = time.monotonic()
    dying.kill()  # SIGKILL: requests in flight on it are cut, as when a host dies
    for cluster, address in _addresses(dying).items():
        await load.until(functools.partial(_taken_out, edge.envoy, cluster, address), f"{address} out")
    ejected = time.monotonic()
    # Keep going well past the ejection: nothing may reach the dead gateway any more.
    seen = load.http.count + load.grpc.count
    await load.until(lambda: load.http.count + load.grpc.count >= seen + 1000, "requests after the ejection")
    await load.stop()
    print(_report("SIGKILL of one of two gateways", load, killed, ejected + 1.0, edge.envoy))
    assert load.http.failures() == [], load.http.failures()[:5]
    assert load.grpc.failures() == [], load.grpc.failures()[:5]
    for cluster in (HTTP_CLUSTER, GRPC_CLUSTER):  # the kill did cut requests, and Envoy repeated them
        assert edge.envoy.counter(f"cluster.{cluster}.upstream_rq_retry") > 0


async def test_a_gateway_stopped_with_sigterm_drains_and_the_edge_stops_routing_to_it(edge: Edge) -> None:
    leaving = edge.gateways[0]
    load = Load(edge)
    await load.start()
    stopped = time.monotonic()
    leaving.process.send_signal(signal.SIGTERM)
    for cluster, address in _addresses(leaving).items():
        await load.until(functools.partial(_taken_out, edge.envoy, cluster, address), f"{address} out")
    ejected = time.monotonic()
    exit_code = await asyncio.to_thread(leaving.process.wait, 30)
    counts = {c: _host_requests(edge.envoy, c, a) for c, a in _addresses(leaving).items()}
    seen = load.http.count + load.grpc.count
    await load.until(lambda: load.http.count + load.grpc.count >= seen + 1000, "requests after the drain")
    await load.stop()
    print(_report("SIGTERM of one of two gateways", load, stopped, ejected + 1.0, edge.envoy))
    assert exit_code == 0, leaving.log
    assert {c: _host_requests(edge.envoy, c, a) for c, a in _addresses(leaving).items()} == counts
    assert load.http.failures() == [], load.http.failures()[:5]
    assert load.grpc.failures() == [], load.grpc.failures()[:5]


async def test_a_gateway_that_answers_late_is_waited_for_past_the_unreachable_timeout(edge: Edge) -> None:
    """A stopped gateway process stands for a slow answer: its kernel still acknowledges Envoy's
    data and keepalive probes, so the requests on it are neither cut nor repeated, however long
    it takes and whatever its health checks say meanwhile."""
    late = edge.gateways[0]
    address = late.url.removeprefix("http://")
    headers = {"Authorization": f"Bearer {edge.key}"}
    failed_checks = f"cluster.{HTTP_CLUSTER}.health_check.failure"
    async with httpx.AsyncClient(base_url=edge.url, headers=headers, timeout=60) as client:
        requests: list[asyncio.Task[httpx.Response]] = []
        late.process.send_signal(signal.SIGSTOP)
        try:
            # Round robin: one of the first few lands on the stopped gateway and stays there.
            while (
                await asyncio.to_thread(_host_requests, edge.envoy, HTTP_CLUSTER, address, "rq_active") == 0
            ):
                answer = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [GOOD]})
                requests.append(asyncio.create_task(answer))
            checks = edge.envoy.counter(failed_checks)
            # Each failed check waited out its 1 s timeout: well past the unreachable timeout.
            await asyncio.to_thread(
                edge.envoy.wait_until,
                lambda: edge.envoy.counter(failed_checks) >= checks + math.ceil(UNREACHABLE_TIMEOUT_S) + 2,
                "health checks of the stopped gateway timing out",
            )
            waiting = _host_requests(edge.envoy, HTTP_CLUSTER, address, "rq_active")
        finally:
            late.process.send_signal(signal.SIGCONT)
        answers = await asyncio.gather(*requests)
    assert waiting > 0
    assert [answer.status_code for answer in answers] == [200] * len(answers)
    assert edge.envoy.counter(f"cluster.{HTTP_CLUSTER}.upstream_rq_retry") == 0
    assert edge.envoy.counter(f"cluster.{HTTP_CLUSTER}.upstream_cx_destroy_with_active_rq") == 0
