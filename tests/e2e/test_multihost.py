"""Several hosts, simulated: an Envoy edge, two gateway hosts, two inference-server hosts, a state
host (PostgreSQL, Redis) and a client host, each a Linux network namespace on one bridge
(``tests.netns``; root only, skipped elsewhere with the reason).

```
client ──► edge (Envoy :8080/:8081) ──► gw1, gw2 (mdeploy serve :8000/:8001) ──► srv1, srv2 (:8001)
                                          └──► state: PostgreSQL :5432 (MDEPLOY_DATABASE_URL),
                                                      Redis :6379 (rate limits, shared state)
```

The gateways run without a local inference server (``--backend grpc://srvN:8001?token_file=``,
one server token), share the admin key (``MDEPLOY_ADMIN_KEY_FILE``), PostgreSQL and Redis. A
load generator on the client host sends paced predictions through the edge and records each
answer (start, latency, error), so every scenario reports requests, failures and p50/p99 before
and during its event; the lines start with ``MULTIHOST`` (``make scale-test`` shows them).

Scenarios: a gateway host going down (its processes killed, then its link), an inference-server
host going down, a version pushed through one gateway host served by the other, a key revoked on
one host refused by the other at once, a rate limit held exactly across hosts (Redis), and, with
``make scale-test`` only (marker ``scale``; ``MDEPLOY_SCALE_TEST=1``), a gateway host cut off
without dying (link only), a PostgreSQL restart under load and hosts coming back under load, with
longer observation windows for every event.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import secrets
import string
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest

from core.child_process import ChildProcess, spawn
from core.server_process import LISTENING, server_command
from core.server_token import ensure_token
from gateway.process import gateway_command
from mdeploy.cli import main
from mdeploy.edge import GRPC_CLUSTER, HTTP_CLUSTER
from modelpkg.builder import build
from tests.e2e.arms import GOOD, MODEL, arm_model, build_arm_packages
from tests.envoy import EnvoyProcess, start_envoy
from tests.netns import Host, Network, unavailable_reason
from tests.services import PostgresServer, RedisServer, _postgres_bin

FULL = os.environ.get("MDEPLOY_SCALE_TEST") == "1"
"""``make scale-test``: every scenario, with longer observation windows."""
long_scenario = pytest.mark.skipif(not FULL, reason="a long multi-host scenario: make scale-test runs it")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900 if FULL else 300)]

HOSTS = ["client", "edge", "gw1", "gw2", "srv1", "srv2", "state"]
GATEWAY_HOSTS = ["gw1", "gw2"]
SERVER_HOSTS = ["srv1", "srv2"]
HTTP_PORT, GRPC_PORT, SERVER_PORT = 8000, 8001, 8001
EDGE_HTTP_PORT, EDGE_GRPC_PORT, EDGE_ADMIN = 8080, 8081, "127.0.0.1:9901"
POSTGRES_PORT, REDIS_PORT = 5432, 6379
DATABASE = "mdeploy"

RATE = 100.0
"""Predictions per second the load sends through the edge, paced over ``CLIENTS`` connections."""
CLIENTS = 8
AFTER_S = 10.0 if FULL else 2.0
"""How long the load goes on after an event has settled (the edge or the pool moved)."""
OUTAGE_S = 10.0 if FULL else 3.0
"""How long PostgreSQL stays down under load."""
HEALTH_INTERVAL_S = 0.25
"""The edge's active health checks (``mdeploy edge-config --health-interval-s``)."""
REFRESH_S = 1.0
"""``MDEPLOY_DEPLOYMENT_REFRESH_S``: how soon another gateway process's change takes effect here."""
PUSH_VISIBLE_S = REFRESH_S + 1.0
"""A version pushed through one gateway host is served by the other within this long: README
("Gateway workers": the others serve it once they have re-read the registry, within the
refresh), plus a second for a request that lands just before its refresh on a loaded machine."""
FEEDBACK_LIMIT = 40
"""Feedback requests per hour of a key (``MDEPLOY_RATE_LIMIT_FEEDBACK``); the admin key, the one
key both hosts know without a shared database, is held to it across both hosts."""
KEY_LIMIT = 30
"""A key's own limit (per hour) in the test of keys made on one host and used on both."""

GATEWAY_ENV = {
    "MDEPLOY_RATE_LIMIT_PREDICT": "1000000/minute",
    "MDEPLOY_RATE_LIMIT_ADMIN": "1000000/minute",
    "MDEPLOY_RATE_LIMIT_FEEDBACK": f"{FEEDBACK_LIMIT}/hour",
    # Every request reaches a gateway from the edge's one address; the revocation test sends 401s.
    "MDEPLOY_AUTH_FAILURES_PER_MINUTE": "1000000",
    "MDEPLOY_HEALTH_INTERVAL_S": "0.5",
    "MDEPLOY_RECONCILE_INTERVAL_S": "1",
    "MDEPLOY_DEPLOYMENT_REFRESH_S": str(REFRESH_S),
    "MDEPLOY_SHUTDOWN_GRACE_S": "5",
}
_UVICORN = re.compile(r"Uvicorn running on")
_BACKEND_UP = re.compile(r'^mdeploy_backend_up\{address="([^"]+)"\} (\S+)$', re.MULTILINE)
_BASE62 = string.ascii_letters + string.digits


def report(line: str) -> None:
    print(f"MULTIHOST {line}", flush=True)


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 60.0) -> float:
    """Poll ``condition`` until it is true; the time it became so (monotonic)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.02)
    return time.monotonic()


def _get(url: str, **kwargs: Any) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2.0, **kwargs)
    except httpx.HTTPError:
        return None


# ---- the processes of the hosts ----


@dataclass
class Daemon:
    """A program of one host, started (and restarted) by its command; its log is kept."""

    host: Host
    command: list[str]
    ready: re.Pattern[str]
    env: dict[str, str] = field(default_factory=dict)
    log_to_stderr: bool = False
    child: ChildProcess | None = None

    def start(self) -> None:
        self.kill()  # reaps a killed predecessor and closes its log
        self.child, _ = spawn(
            self.host.command(self.command),
            self.ready,
            env=self.env,
            timeout_s=120,
            log_to_stderr=self.log_to_stderr,
        )

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.process.poll() is None

    @property
    def log(self) -> str:
        return self.child.log if self.child is not None else ""

    def kill(self) -> None:
        if self.child is not None:
            self.child.kill()

    def has_loaded(self) -> bool:
        """An inference server's log says the model was loaded (at a gateway's request)."""
        return f"model {MODEL} loaded" in self.log


@dataclass
class Answer:
    started: float
    seconds: float
    error: str | None

    @property
    def ended(self) -> float:
        return self.started + self.seconds


class Load:
    """Paced predictions through the edge from the client host, each answer recorded."""

    def __init__(self, host: Host, url: str, key: str, rate: float = RATE, clients: int = CLIENTS) -> None:
        self.host, self.url, self.key = host, url, key
        self.interval = clients / rate
        self.clients = clients
        self.answers: list[Answer] = []
        self.stopping = threading.Event()
        self.steady_from = 0.0
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = self.host.thread(self._main, "load")
        self.wait_count(50, "the load to flow")
        self.steady_from = time.monotonic()  # before: connections opening, first batches
        self.wait_for(2.0, "a steady baseline")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60) as client:
            start = time.monotonic()
            await asyncio.gather(
                *(self._client(client, start + i * self.interval / self.clients) for i in range(self.clients))
            )

    async def _client(self, client: httpx.AsyncClient, next_at: float) -> None:
        while not self.stopping.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + self.interval, time.monotonic())  # late: no catching up
            started = time.monotonic()
            try:
                answer = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": [GOOD]})
                if answer.status_code != 200:
                    error: str | None = f"HTTP {answer.status_code}: {answer.text[:200]}"
                elif answer.json().get("predictions") != [GOOD]:
                    error = f"wrong answer {answer.text[:200]}"
                else:
                    error = None
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.answers.append(Answer(started, time.monotonic() - started, error))

    # ---- waiting and reading ----

    def _check_running(self) -> None:
        assert self._thread is not None
        assert self._thread.is_alive(), "the load generator stopped"

    def wait_count(self, count: int, what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.answers) < count:
            self._check_running()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def wait_for(self, seconds: float, what: str) -> None:
        """Until the answers of ``seconds`` of load more have come back."""
        self.wait_count(len(self.answers) + int(seconds * RATE), what, timeout_s=60 + 10 * seconds)

    def finished_before(self, since: float) -> list[Answer]:
        """The steady load's requests answered before ``since``."""
        return [a for a in list(self.answers) if self.steady_from <= a.started and a.ended < since]

    def in_flight(self, since: float, until: float) -> list[Answer]:
        """The requests in flight at some moment between ``since`` and ``until``."""
        return [a for a in list(self.answers) if a.started <= until and a.ended >= since]

    def failures(self) -> list[str]:
        """Each failed request: when it started (seconds into the steady load) and its error."""
        return [f"{a.started - self.steady_from:+.2f} s {a.error}" for a in list(self.answers) if a.error]

    def summary(self, what: str, since: float, until: float) -> str:
        """Requests and failures in all; latencies of the requests answered before the event
        (steady load) and of those in flight during it (from ``since`` to ``until``)."""

        def percentiles(answers: list[Answer]) -> str:
            if not answers:
                return "no requests"
            took = np.array([a.seconds for a in answers]) * 1000
            failed = sum(a.error is not None for a in answers)
            return (
                f"{len(answers)} requests, {failed} failed, p50 {np.percentile(took, 50):.1f} ms, "
                f"p99 {np.percentile(took, 99):.1f} ms, max {took.max():.0f} ms"
            )

        return (
            f"{what} (at {since - self.steady_from:+.1f} s): {len(self.answers)} requests, "
            f"{len(self.failures())} failed; "
            f"before: {percentiles(self.finished_before(since))}; "
            f"during ({until - since:.2f} s): {percentiles(self.in_flight(since, until))}"
        )


@dataclass
class Cluster:
    network: Network
    workdir: Path
    postgres: PostgresServer
    redis: RedisServer
    servers: dict[str, Daemon]
    gateways: dict[str, Daemon]
    envoy: EnvoyProcess
    admin_key: str

    @property
    def client(self) -> Host:
        return self.network["client"]

    @property
    def edge(self) -> Host:
        return self.network["edge"]

    @property
    def state(self) -> Host:
        return self.network["state"]

    @property
    def edge_url(self) -> str:
        return f"http://{self.edge.address}:{EDGE_HTTP_PORT}"

    def url(self, gateway: str) -> str:
        return f"http://{self.network[gateway].address}:{HTTP_PORT}"

    def server_address(self, server: str) -> str:
        return f"{self.network[server].address}:{SERVER_PORT}"

    def gateway_addresses(self, gateway: str) -> dict[str, str]:
        address = self.network[gateway].address
        return {HTTP_CLUSTER: f"{address}:{HTTP_PORT}", GRPC_CLUSTER: f"{address}:{GRPC_PORT}"}

    def load(self) -> Load:
        return Load(self.client, self.edge_url, self.admin_key)

    # ---- requests from the client host ----

    def request(self, method: str, url: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.admin_key}", **kwargs.pop("headers", {})}
        return self.client.call(httpx.request, method, url, headers=headers, timeout=120, **kwargs)

    def predict(self, url: str, key: str | None = None, model: str = MODEL) -> httpx.Response:
        return self.request("POST", f"{url}/v1/models/{model}:predict", key, json={"instances": [GOOD]})

    def push(self, gateway: str, package: Path) -> httpx.Response:
        headers = {"Content-Type": "application/octet-stream"}
        url = f"{self.url(gateway)}/v1/admin/packages"
        return self.request("POST", url, content=package.read_bytes(), headers=headers)

    def create_key(self, gateway: str, **body: Any) -> dict[str, Any]:
        answer = self.request("POST", f"{self.url(gateway)}/v1/admin/keys", json=body)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def backends_up(self, gateway: str) -> dict[str, bool]:
        """What ``gateway``'s /metrics says of each inference server (up or not)."""
        answer = self.client.call(_get, f"{self.url(gateway)}/metrics")
        if answer is None or answer.status_code != 200:
            return {}
        return {address: value == "1.0" for address, value in _BACKEND_UP.findall(answer.text)}

    def gateway_ready(self, gateway: str) -> bool:
        answer = self.client.call(_get, f"{self.url(gateway)}/v2/health/ready")
        if answer is None or answer.status_code != 200:
            return False
        return all(self.backends_up(gateway).get(self.server_address(s)) for s in SERVER_HOSTS)

    def edge_routes(self, gateway: str) -> dict[str, bool]:
        """Whether the edge routes to ``gateway`` now, per cluster (HTTP, gRPC)."""
        return {
            cluster: self.edge.call(self.envoy.hosts, cluster)[address]
            for cluster, address in self.gateway_addresses(gateway).items()
        }

    def edge_counters(self) -> dict[str, int]:
        """Envoy's retries, per-try timeouts and connect timeouts toward the gateways (HTTP)."""
        names = ("upstream_rq_retry", "upstream_rq_per_try_timeout", "upstream_cx_connect_timeout")
        return {n: self.edge.call(self.envoy.counter, f"cluster.{HTTP_CLUSTER}.{n}") for n in names}

    def sql(self, query: str) -> str:
        """``query``'s rows (psql -At) in the gateways' database, from the state host."""
        command = [_postgres_bin("psql"), "-At", "-h", self.state.address, "-p", str(POSTGRES_PORT)]
        command += ["-U", "postgres", "-d", DATABASE, "-c", query]
        done = self.state.call(subprocess.run, command, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else f"ERROR: {done.stderr.strip()}"

    # ---- taking hosts down and bringing them back ----

    def take_down(self, host: str) -> float:
        """Kill everything on ``host``, then pull its cable; the moment it began."""
        began = time.monotonic()
        self.network[host].kill_processes()
        self.network[host].link_down()
        return began

    def heal(self) -> None:
        """Every link up, every process running and ready, the edge routing to both gateways,
        both inference servers up in both gateways with the model loaded."""
        for host in self.network.hosts.values():
            if not host.link_is_up():
                host.link_up()
        if not self.state.call(self.postgres_answers):
            self.state.call(self.postgres.start)
        restarted = [name for name, server in self.servers.items() if not server.alive]
        for name in restarted:
            self.servers[name].start()
        for daemon in self.gateways.values():
            if not daemon.alive:
                daemon.start()
        for name in restarted:  # a gateway's reconcile loads the model on the new server
            wait_until(self.servers[name].has_loaded, f"{MODEL} on {name}")
        for gateway in GATEWAY_HOSTS:
            wait_until(functools.partial(self.gateway_ready, gateway), f"{gateway} ready with both servers")
            wait_until(functools.partial(self.routed, gateway), f"the edge routing to {gateway}")

    def routed(self, gateway: str) -> bool:
        """The edge routes to ``gateway`` in both clusters."""
        return all(self.edge_routes(gateway).values())

    def taken_out(self, gateway: str) -> bool:
        """The edge routes to ``gateway`` in neither cluster."""
        return not any(self.edge_routes(gateway).values())

    def marked_down(self, gateway: str, server: str) -> bool:
        return self.backends_up(gateway).get(self.server_address(server)) is False

    def marked_up_everywhere(self, server: str) -> bool:
        return all(self.backends_up(g).get(self.server_address(server)) for g in GATEWAY_HOSTS)

    def postgres_answers(self) -> bool:
        return self.postgres.process is not None and self.postgres.process.poll() is None


def _admin_key() -> str:
    """A key in the gateway's format (``mdk_<id>_<secret>``), made here like an operator's secret."""
    return f"mdk_{secrets.token_hex(8)}_{''.join(secrets.choice(_BASE62) for _ in range(43))}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"multi-host test: {reason}")
    workdir = tmp_path_factory.mktemp("multihost")
    with ExitStack() as stack:
        network = stack.enter_context(Network(HOSTS))
        report(f"hosts {', '.join(f'{h.name} {h.address}' for h in network.hosts.values())}")
        state = network["state"]
        postgres = PostgresServer(host=state.address, port=POSTGRES_PORT)
        stack.callback(postgres.remove)
        redis = RedisServer(workdir, host=state.address, port=REDIS_PORT)
        stack.callback(redis.stop)
        token_file = workdir / "server-token"
        ensure_token(token_file)
        key_file = workdir / "admin-key"
        admin_key = _admin_key()
        key_file.write_text(admin_key + "\n")
        key_file.chmod(0o600)

        servers = {
            name: Daemon(
                network[name],
                [
                    *server_command(),
                    *("--grpc-address", network[name].address, "--grpc-port", str(SERVER_PORT)),
                    *("--auth-token-file", str(token_file), "--model-control-mode", "explicit"),
                    *("--work-dir", str(workdir / name)),
                ],
                LISTENING,
                log_to_stderr=True,
            )
            for name in SERVER_HOSTS
        }
        token = urlencode({"token_file": str(token_file)})
        backends = [f"grpc://{network[name].address}:{SERVER_PORT}?{token}" for name in SERVER_HOSTS]
        env = {
            **GATEWAY_ENV,
            "MDEPLOY_DATABASE_URL": postgres.url(DATABASE),
            "MDEPLOY_RATE_LIMIT_STORAGE": redis.uri,
            "MDEPLOY_SHARED_STATE_URL": redis.uri,
            "MDEPLOY_ADMIN_KEY_FILE": str(key_file),
        }
        gateways = {
            name: Daemon(
                network[name],
                [
                    *gateway_command(),
                    *("serve", "--data-dir", str(workdir / name), "--host", network[name].address),
                    *("--port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT)),
                    *(argument for backend in backends for argument in ("--backend", backend)),
                ],
                _UVICORN,
                env,
            )
            for name in GATEWAY_HOSTS
        }
        daemons = [*servers.values(), *gateways.values()]
        for daemon in daemons:
            stack.callback(daemon.kill)
        began = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            starting = [pool.submit(server.start) for server in servers.values()]
            state.call(postgres.start)
            state.call(postgres.create_database, DATABASE)
            state.call(redis.start)
            for future in starting:
                future.result()
            for future in [pool.submit(gateway.start) for gateway in gateways.values()]:
                future.result()

        listen = f"{network['edge'].address}:{EDGE_HTTP_PORT}"
        grpc_listen = f"{network['edge'].address}:{EDGE_GRPC_PORT}"
        config = workdir / "envoy.yaml"
        written = main(
            [
                "edge-config",
                *("--gateways", ",".join(f"{network[g].address}:{HTTP_PORT}" for g in GATEWAY_HOSTS)),
                *("--listen", listen, "--grpc-listen", grpc_listen, "--admin", EDGE_ADMIN),
                *("--health-interval-s", str(HEALTH_INTERVAL_S), "-o", str(config)),
            ]
        )
        assert written == 0
        envoy = network["edge"].call(start_envoy, config, EDGE_ADMIN)
        stack.callback(envoy.stop, 10)
        cluster = Cluster(network, workdir, postgres, redis, servers, gateways, envoy, admin_key)

        # The model the load asks for: pushed through each gateway host. With the registry in
        # PostgreSQL the second push is the same package again (200, unchanged); with a
        # registry per host it is that host's first.
        package = build_arm_packages(workdir)["a"]
        for gateway in GATEWAY_HOSTS:
            pushed = cluster.push(gateway, package)
            assert pushed.status_code in (200, 201), pushed.text
        cluster.heal()
        report(f"cluster up in {time.monotonic() - began:.1f} s")
        yield cluster


@pytest.fixture
def cluster(deployment: Cluster) -> Cluster:
    """The whole cluster, healed of what an earlier test took down."""
    deployment.heal()
    return deployment


# ---- scenarios ----


def test_a_gateway_host_going_down_costs_no_request(cluster: Cluster) -> None:
    """gw1's processes killed, then its link pulled: the edge retries what was cut and takes it out."""
    counters_before = cluster.edge_counters()
    with cluster.load() as load:
        began = cluster.take_down("gw1")
        out = wait_until(functools.partial(cluster.taken_out, "gw1"), "the edge taking gw1 out")
        load.wait_for(AFTER_S, "requests after gw1 was taken out")
    counters = {name: n - counters_before[name] for name, n in cluster.edge_counters().items()}
    report(
        load.summary("gateway host gw1 down (kill, then link)", began, out + 1.0)
        + f"; out of the edge after {out - began:.2f} s; edge {counters}"
    )
    assert load.failures() == [], load.failures()[:5]


def test_an_inference_server_host_going_down_moves_the_pool_without_a_failure(cluster: Cluster) -> None:
    """srv1 killed, then its link pulled: both gateways mark it down and serve from srv2."""
    with cluster.load() as load:
        began = cluster.take_down("srv1")
        moved = {
            gateway: wait_until(
                functools.partial(cluster.marked_down, gateway, "srv1"), f"{gateway} marking srv1 down"
            )
            for gateway in GATEWAY_HOSTS
        }
        settled = max(moved.values())
        load.wait_for(AFTER_S, "requests after the pool moved")
    report(
        load.summary("inference-server host srv1 down (kill, then link)", began, settled + 1.0)
        + "; marked down after "
        + ", ".join(f"{g} {t - began:.2f} s" for g, t in moved.items())
    )
    assert load.failures() == [], load.failures()[:5]
    for gateway in GATEWAY_HOSTS:
        assert cluster.backends_up(gateway).get(cluster.server_address("srv2")), f"{gateway} lost srv2 too"


def test_a_key_rate_limit_holds_exactly_across_gateway_hosts(cluster: Cluster) -> None:
    """The admin key's feedback allowance, counted in Redis: requests sent at once to both hosts."""
    per_host = FEEDBACK_LIMIT // 2 + 15

    def feedback(gateway: str, index: int) -> int:
        body = {"request_id": f"no-such-request-{gateway}-{index}", "reward": 1.0}
        url = f"{cluster.url(gateway)}/v1/models/{MODEL}/feedback"
        return cluster.request("POST", url, json=body).status_code

    futures = [
        cluster.client.submit(feedback, gateway, index)
        for index in range(per_host)
        for gateway in GATEWAY_HOSTS
    ]
    statuses = [future.result() for future in futures]
    allowed = [s for s in statuses if s != 429]
    report(
        f"rate limit {FEEDBACK_LIMIT}/hour of one key over 2 gateway hosts: {len(statuses)} requests, "
        f"{len(allowed)} allowed, {statuses.count(429)} refused (429); statuses {sorted(set(statuses))}"
    )
    assert len(allowed) == FEEDBACK_LIMIT
    assert all(s < 500 and s not in (401, 403) for s in allowed), sorted(set(statuses))


def test_a_key_made_on_one_host_keeps_its_own_limit_on_both(cluster: Cluster) -> None:
    """A key with its own limit, made through gw1: gw2 knows it, and the limit is one across hosts."""
    key = cluster.create_key("gw1", scopes=["predict"], rate_limit=f"{KEY_LIMIT}/hour", name="limited")["key"]
    first = cluster.predict(cluster.url("gw2"), key)
    assert first.status_code == 200, (
        f"gw2 answers {first.status_code} to a key made through gw1 ({first.text[:200]}): keys are not "
        "shared between gateway hosts (MDEPLOY_DATABASE_URL: PostgreSQL)"
    )
    futures = [
        cluster.client.submit(cluster.predict, cluster.url(gateway), key)
        for _ in range(KEY_LIMIT // 2 + 10)
        for gateway in GATEWAY_HOSTS
    ]
    statuses = [first.status_code, *(future.result().status_code for future in futures)]
    report(
        f"own limit {KEY_LIMIT}/hour of a key made on gw1, used on both: {len(statuses)} requests, "
        f"{statuses.count(200)} answered, {statuses.count(429)} refused (429)"
    )
    assert statuses.count(200) == KEY_LIMIT
    assert statuses.count(429) == len(statuses) - KEY_LIMIT


def test_a_key_revoked_on_one_host_is_refused_by_the_other_at_once(cluster: Cluster) -> None:
    created = cluster.create_key("gw1", scopes=["predict"], name="to revoke")
    key = created["key"]
    accepted = cluster.predict(cluster.url("gw2"), key)
    assert accepted.status_code == 200, (
        f"gw2 answers {accepted.status_code} to a key made through gw1 ({accepted.text[:200]}): keys are "
        "not shared between gateway hosts (MDEPLOY_DATABASE_URL: PostgreSQL)"
    )
    for _ in range(5):  # both hosts have verified (and remember) the key
        for gateway in GATEWAY_HOSTS:
            assert cluster.predict(cluster.url(gateway), key).status_code == 200
    revoked = cluster.request("DELETE", f"{cluster.url('gw1')}/v1/admin/keys/{created['id']}")
    answered = time.monotonic()
    assert revoked.status_code == 200, revoked.text
    refused = cluster.predict(cluster.url("gw2"), key)
    took = time.monotonic() - answered
    through_edge = [cluster.predict(cluster.edge_url, key).status_code for _ in range(6)]
    report(
        f"key revoked through gw1: gw2's next answer {refused.status_code} ({took * 1000:.0f} ms after the "
        f"revocation's answer); through the edge {through_edge}"
    )
    assert refused.status_code == 401, refused.text
    assert through_edge == [401] * 6


def test_a_version_pushed_through_one_host_is_served_by_the_other(cluster: Cluster) -> None:
    name = f"fresh{secrets.token_hex(3)}"
    package = cluster.workdir / f"{name}.pkg"
    samples = {"x": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)}
    build(arm_model(False), package, name=name, samples=samples, description="pushed via gw1", code_dir=None)
    pushed = cluster.push("gw1", package)
    answered = time.monotonic()
    assert pushed.status_code == 201, pushed.text
    other = cluster.url("gw2")
    deadline = answered + PUSH_VISIBLE_S + 10.0  # long enough to measure a late one
    while (status := cluster.predict(other, model=name).status_code) != 200 and time.monotonic() < deadline:
        pass  # each request is the poll
    took = time.monotonic() - answered
    report(
        f"version pushed through gw1: gw2 serves it after {took:.2f} s (bound {PUSH_VISIBLE_S:.1f} s)"
        if status == 200
        else f"version pushed through gw1: gw2 still answers {status} after {took:.1f} s"
    )
    assert status == 200, (
        f"gw2 does not serve {name}, pushed through gw1 {took:.1f} s ago: the registry is not shared "
        "between gateway hosts (MDEPLOY_DATABASE_URL: PostgreSQL)"
    )
    assert took <= PUSH_VISIBLE_S
    through_edge = [cluster.predict(cluster.edge_url, model=name).status_code for _ in range(6)]
    assert through_edge == [200] * 6


@pytest.mark.scale
@long_scenario
def test_a_gateway_host_cut_off_without_dying_costs_no_request(cluster: Cluster) -> None:
    """gw1's link pulled while its gateway runs (a partition, a dead switch port): nothing tells
    the edge, whose requests in flight there are reset by ``--unreachable-timeout-s`` (5 s: TCP
    user timeout and keepalive), well before their per-try timeout, and go elsewhere."""
    counters_before = cluster.edge_counters()
    with cluster.load() as load:
        began = time.monotonic()
        cluster.network["gw1"].link_down()
        out = wait_until(functools.partial(cluster.taken_out, "gw1"), "the edge taking gw1 out")
        load.wait_for(AFTER_S, "requests after gw1 was taken out")
    counters = {name: n - counters_before[name] for name, n in cluster.edge_counters().items()}
    report(
        load.summary("gateway host gw1 cut off (link only)", began, out + 1.0)
        + f"; out of the edge after {out - began:.2f} s; edge {counters}"
    )
    assert load.failures() == [], load.failures()[:5]
    assert counters["upstream_rq_per_try_timeout"] == 0, counters


@pytest.mark.scale
@long_scenario
def test_a_postgresql_restart_loses_nothing_and_loaded_models_keep_serving(cluster: Cluster) -> None:
    """PostgreSQL stopped (fast shutdown) under load and started again: the loaded model keeps
    answering through the edge meanwhile; a key made before and one made after are in PostgreSQL and
    work on both hosts."""
    before = cluster.create_key("gw1", scopes=["predict"], name="made before the restart")
    with cluster.load() as load:
        stopped = time.monotonic()
        cluster.postgres.stop(fast=True)
        load.wait_for(OUTAGE_S, "requests while PostgreSQL is down")
        restarting = time.monotonic()
        cluster.state.call(cluster.postgres.start)
        back = time.monotonic()

        made: list[dict[str, Any]] = []

        def writes_again() -> bool:
            url = f"{cluster.url('gw2')}/v1/admin/keys"
            answer = cluster.request(
                "POST", url, json={"scopes": ["predict"], "name": "made after the restart"}
            )
            if answer.status_code == 201:
                made.append(answer.json())
            return bool(made)

        writable = wait_until(writes_again, "a key made through gw2 after the restart")
        load.wait_for(AFTER_S, "requests after the restart")
    report(
        load.summary("PostgreSQL stopped (fast) and started again", stopped, back)
        + f"; down {restarting - stopped:.1f} s, up again in {back - restarting:.2f} s; "
        f"gw2 writes again {writable - back:.2f} s after"
    )
    stored = cluster.sql(f"SELECT count(*) FROM api_keys WHERE id IN ('{before['id']}', '{made[0]['id']}')")
    assert stored == "2", f"the gateways keep their keys elsewhere than in PostgreSQL (psql: {stored})"
    for gateway in GATEWAY_HOSTS:
        for key in (before, made[0]):
            answer = cluster.request("GET", f"{cluster.url(gateway)}/v1/admin/keys/{key['id']}")
            assert answer.status_code == 200, f"{gateway} lost key {key['name']!r}: {answer.text[:200]}"
            assert cluster.predict(cluster.url(gateway), key["key"]).status_code == 200
    assert load.failures() == [], load.failures()[:5]  # after the data: both are reported


@pytest.mark.scale
@long_scenario
def test_hosts_coming_back_under_load_cost_no_request(cluster: Cluster) -> None:
    """gw1 down and back (link up, gateway restarted), then srv1 likewise, under one steady load."""
    lines = []
    with cluster.load() as load:
        began = cluster.take_down("gw1")
        wait_until(functools.partial(cluster.taken_out, "gw1"), "the edge taking gw1 out")
        load.wait_for(AFTER_S / 2, "requests while gw1 is down")
        back = time.monotonic()
        cluster.network["gw1"].link_up()
        cluster.gateways["gw1"].start()
        rejoined = wait_until(
            functools.partial(cluster.routed, "gw1"), "the edge routing to gw1 again", timeout_s=120
        )
        load.wait_for(AFTER_S, "requests after gw1 came back")
        lines.append(
            load.summary("gateway host gw1 back (link up, gateway started)", back, rejoined + 1.0)
            + f"; down {back - began:.1f} s; routed to again {rejoined - back:.2f} s after"
        )

        began = cluster.take_down("srv1")
        for gateway in GATEWAY_HOSTS:
            wait_until(functools.partial(cluster.marked_down, gateway, "srv1"), f"{gateway} losing srv1")
        load.wait_for(AFTER_S / 2, "requests while srv1 is down")
        back = time.monotonic()
        cluster.network["srv1"].link_up()
        cluster.servers["srv1"].start()
        loaded = wait_until(cluster.servers["srv1"].has_loaded, "the model on srv1")
        up = wait_until(
            functools.partial(cluster.marked_up_everywhere, "srv1"),
            "srv1 up in both gateways",
        )
        load.wait_for(AFTER_S, "requests after srv1 came back")
        lines.append(
            load.summary(
                "inference-server host srv1 back (link up, server started)", back, max(loaded, up) + 1.0
            )
            + f"; down {back - began:.1f} s; model loaded {loaded - back:.2f} s and up in both gateways "
            f"{up - back:.2f} s after"
        )
    for line in lines:
        report(line)
    assert load.failures() == [], load.failures()[:5]
