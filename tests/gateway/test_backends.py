"""The backend pool sends a prediction only to a server that serves its version while another does:
the routing decision on its own, then real servers that restart empty or lose a model unnoticed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2_grpc

from core.errors import MdeployError
from core.server_process import ServerProcess, start_server_process
from gateway.backends import Backend, BackendPool, Inventory
from gateway.dataplane import DataPlane, InferenceRequest
from modelpkg import read_package
from protos.generated import inference_pb2_grpc as pb_grpc
from tests.gateway.registry_support import Appointed, Rig, running_registry, served_versions, wait_until

MODEL = "digits-sklearn"
QUICK = {"reconcile_interval_s": 0.2, "deployment_refresh_s": 0.1, "health_interval_s": 0.1}
SERVER_ARGS = ["--grpc-address", "127.0.0.1", "--model-control-mode", "explicit"]


# ---- the routing decision ----


@pytest.fixture
async def pool() -> AsyncIterator[BackendPool]:
    """Three healthy backends that are never called (their channels never connect)."""
    pool = BackendPool(["a", "b", "c"])
    for name in pool.addresses:
        channel = grpc.aio.insecure_channel("127.0.0.1:1")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        pool.backends.append(Backend(name, channel, stub, health_pb2_grpc.HealthStub(channel), healthy=True))
    yield pool
    await pool.close()


def given(pool: BackendPool, **inventories: Inventory | None) -> list[Backend]:
    for backend in pool.backends:
        backend.inventory = inventories.get(backend.address)
    return pool.backends


async def test_a_version_goes_to_a_backend_that_serves_it_however_busy(pool: BackendPool) -> None:
    a, b, c = given(pool, a={MODEL: frozenset({"1"})}, b={}, c=None)
    a.in_flight = 5

    assert pool.pick(MODEL, "1") is a
    assert pool.pick(MODEL, "", {b}) is a  # no version named: any version of the model
    assert b.inventory_stale
    assert c.inventory_stale


async def test_the_least_busy_of_the_backends_that_serve_a_version_gets_it(pool: BackendPool) -> None:
    a, b, _ = given(pool, a={MODEL: frozenset({"1", "2"})}, b={MODEL: frozenset({"2"})}, c={})
    a.in_flight, b.in_flight = 3, 1

    assert pool.pick(MODEL, "2") is b
    assert pool.pick(MODEL, "1") is a
    assert pool.pick(MODEL, "2", exclude={b}) is a


async def test_a_version_no_healthy_backend_is_known_to_serve_goes_to_the_least_busy_healthy_one(
    pool: BackendPool,
) -> None:
    a, b, c = given(pool, a={MODEL: frozenset({"1"})}, b={}, c=None)
    b.in_flight, c.in_flight = 2, 1
    a.healthy = False

    assert pool.pick(MODEL, "1") is c
    assert pool.pick("other", "1") is c
    assert pool.pick(MODEL, "1", exclude={c}) is b


async def test_what_this_process_loads_and_what_a_server_says_it_lacks_change_its_inventory(
    pool: BackendPool,
) -> None:
    a, b, _ = given(pool, a={MODEL: frozenset({"1", "2"})}, b=None)

    a.note_missing(MODEL, "2")  # it answered NOT_FOUND
    b.note_loaded(MODEL, ["1", "2"])  # loaded here: offered at once, the rest read at the next check

    assert not a.serves(MODEL, "2")
    assert a.serves(MODEL, "1")
    assert b.serves(MODEL, "2")
    assert b.inventory_stale
    assert pool.pick(MODEL, "2") is b
    b.note_unloaded(MODEL)
    assert not b.serves(MODEL, "1")


# ---- real servers ----


def start_server(port: int = 0) -> ServerProcess:
    return start_server_process(["--grpc-port", str(port), *SERVER_ARGS])


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started = [start_server(), start_server()]
    yield started
    for server in started:
        server.stop(timeout_s=10)


@pytest.fixture
def sklearn_pkg(demo_packages: dict[str, Path]) -> Path:
    return demo_packages[MODEL]


def answered_by(server: ServerProcess) -> int:
    """Rows of ``MODEL`` that ``server`` answered since it started (0 while it does not serve it)."""
    with triton.InferenceServerClient(server.address) as client:
        try:
            stats = client.get_inference_statistics(MODEL, as_json=True)
        except triton.InferenceServerException:
            return 0
    return sum(int(model.get("inference_count", 0)) for model in stats.get("model_stats", []))


def backend_at(pool: BackendPool, server: ServerProcess) -> Backend:
    return next(b for b in pool.backends if b.address == server.address)


@dataclass
class SteadyLoad:
    """Clients that send one-row predictions through the data plane, one after another."""

    plane: DataPlane
    inputs: dict[str, np.ndarray]
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    running: bool = True

    async def client(self) -> None:
        while self.running:
            try:
                await self.plane.infer(InferenceRequest(MODEL, None, self.inputs))
                self.answered += 1
            except MdeployError as error:
                self.failures.append(f"{type(error).__name__}: {error.message}")

    async def more(self, count: int, what: str) -> None:
        target = self.answered + count
        await wait_until(lambda: self.answered >= target, f"{count} more answers {what}", 30)


@asynccontextmanager
async def steady_load(rig: Rig, package: Path, clients: int = 4) -> AsyncIterator[SteadyLoad]:
    samples = read_package(package).samples.inputs
    plane = DataPlane(rig.registry, rig.pool, rig.settings)
    load = SteadyLoad(plane, {name: array[:1] for name, array in samples.items()})
    tasks = [asyncio.create_task(load.client()) for _ in range(clients)]
    try:
        yield load
    finally:
        load.running = False
        await asyncio.gather(*tasks)
        await plane.close()


@pytest.mark.e2e
@pytest.mark.usefixtures("gateway_database")
async def test_a_restarted_server_gets_no_prediction_before_the_leader_has_loaded_the_model(
    tmp_path: Path, servers: list[ServerProcess], sklearn_pkg: Path
) -> None:
    """As on a gateway host that does not lead: the server is healthy again long before the leader's
    reconcile has loaded the model on it, and requests must go to the other server meanwhile."""
    backends = [server.address for server in servers]
    lead = Appointed(False)
    async with (
        running_registry(tmp_path, backends, lead, **QUICK),
        running_registry(tmp_path, backends, Appointed(False), **QUICK) as gateway,
    ):
        await gateway.push(sklearn_pkg)  # loaded on both servers
        async with steady_load(gateway, sklearn_pkg) as load:
            await load.more(50, "before the restart")
            port = servers[0].port
            servers[0].kill()
            servers[0] = start_server(port)  # the same address, nothing loaded
            restarted = backend_at(gateway.pool, servers[0])
            await wait_until(lambda: restarted.healthy, "the gateway to see the restarted server up", 30)

            await load.more(200, "while the restarted server is up without the model")
            assert served_versions(servers[0].address, MODEL) == set()  # no one has loaded it yet
            assert load.failures == []

            lead.is_leader = True  # its reconcile loads the model on the restarted server
            await wait_until(
                lambda: served_versions(servers[0].address, MODEL) == {"1"}, "the leader's reconcile", 30
            )
            await wait_until(
                lambda: answered_by(servers[0]) > 0, "the restarted server to get predictions again", 30
            )
            await load.more(50, "after the reconcile")
        assert load.failures == [], load.failures[:5]


@pytest.mark.e2e
@pytest.mark.usefixtures("gateway_database")
async def test_a_server_that_lost_a_model_unnoticed_costs_no_prediction(
    tmp_path: Path, servers: list[ServerProcess], sklearn_pkg: Path
) -> None:
    """The pool believes both serve it (no restart seen, no index read): the NOT_FOUND of the one that
    lost it makes the pool retry elsewhere and stop sending it requests for the model."""
    backends = [server.address for server in servers]
    async with running_registry(tmp_path, backends, Appointed(False), health_interval_s=3600) as gateway:
        await gateway.push(sklearn_pkg)
        lost = backend_at(gateway.pool, servers[0])  # the first: it gets the batches while both are idle
        assert lost.serves(MODEL, "1")
        with triton.InferenceServerClient(servers[0].address) as client:
            client.unload_model(MODEL)  # behind the gateway's back, as a restart it did not see

        async with steady_load(gateway, sklearn_pkg) as load:
            await wait_until(lambda: not lost.serves(MODEL, "1"), "the pool to learn the model is gone", 30)
            await load.more(100, "after the pool learnt it")
        assert load.failures == [], load.failures[:5]
        assert answered_by(servers[1]) == load.answered
