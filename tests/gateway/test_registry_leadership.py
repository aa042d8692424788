"""Registries of several gateway processes on one data folder: only the leader reconciles, every
one serves what any of them made live, and a push through a follower is loaded at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tritonclient.grpc as triton

from core.server_process import ServerProcess, start_server_process
from tests.gateway.registry_support import running_registry, served_versions, wait_until

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

MODEL = "digits-sklearn"
QUICK = {"reconcile_interval_s": 0.2, "deployment_refresh_s": 0.1}


@dataclass
class Appointed:
    """A leadership the test decides (``gateway.leadership.Leadership``)."""

    is_leader: bool

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    process = start_server_process(
        ["--grpc-port", "0", "--grpc-address", "127.0.0.1", "--model-control-mode", "explicit"]
    )
    yield process
    process.stop(timeout_s=10)


@pytest.fixture
def sklearn_pkg(demo_packages: dict[str, Path]) -> Path:
    return demo_packages[MODEL]


def unload_behind_the_gateways_back(server: ServerProcess) -> None:
    """As a restarted inference server forgets what it served."""
    with triton.InferenceServerClient(server.address) as client:
        client.unload_model(MODEL)
    assert served_versions(server.address, MODEL) == set()


async def test_a_follower_serves_what_the_leader_pushed(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    backends = [server.address]
    async with (
        running_registry(tmp_path, backends, Appointed(True), **QUICK) as leader,
        running_registry(tmp_path, backends, Appointed(False), **QUICK) as follower,
    ):
        await leader.push(sklearn_pkg)

        await wait_until(lambda: follower.registry.is_loaded(MODEL), "the follower to serve the push", 5)
        assert follower.registry.resolve(MODEL, None).version == "1"


async def test_a_push_through_a_follower_is_loaded_and_reaches_the_leader(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    backends = [server.address]
    async with (
        running_registry(tmp_path, backends, Appointed(True), **QUICK) as leader,
        running_registry(tmp_path, backends, Appointed(False), **QUICK) as follower,
    ):
        await follower.push(sklearn_pkg)

        assert served_versions(server.address, MODEL) == {"1"}  # the push loads it, not a reconcile
        await wait_until(lambda: leader.registry.is_loaded(MODEL), "the leader to serve the push", 5)


async def test_only_the_leader_reconciles_and_a_new_leader_does_at_once(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    lead = Appointed(False)
    async with running_registry(tmp_path, [server.address], lead, **QUICK) as follower:
        await follower.push(sklearn_pkg)
        unload_behind_the_gateways_back(server)

        await asyncio.sleep(10 * QUICK["reconcile_interval_s"])
        assert served_versions(server.address, MODEL) == set()  # a follower leaves the servers alone
        assert follower.registry.is_loaded(MODEL)  # and still serves what is live

        lead.is_leader = True  # the leader died; the lock moved here
        await wait_until(
            lambda: served_versions(server.address, MODEL) == {"1"}, "the new leader to reconcile", 10
        )
