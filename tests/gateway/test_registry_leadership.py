"""Registries of several gateway processes on one data folder: only the leader reconciles, every
one serves what any of them made live, and a push through a follower is loaded at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as triton

from core.server_process import ServerProcess, start_server_process
from gateway.database.notifications import PostgresNotifications
from gateway.registry.service import REGISTRY_CHANNEL
from tests.gateway.registry_support import (
    Appointed,
    running_registry,
    same_bytes,
    served_versions,
    wait_until,
)
from tests.registry.seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("gateway_database")]

MODEL = "digits-sklearn"
QUICK = {"reconcile_interval_s": 0.2, "deployment_refresh_s": 0.1}


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


async def test_a_gateway_host_with_its_own_data_folder_serves_pushes_made_on_another_at_once(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path, gateway_database: str | None
) -> None:
    """Two hosts share only PostgreSQL: the package comes from the database's blob store, and the
    push reaches the other host by notification, not by its (hour-long) refresh tick."""
    if gateway_database is None:
        pytest.skip("gateway hosts with separate data folders share a PostgreSQL database, not SQLite")
    backends = [server.address]
    slow = {"reconcile_interval_s": 3600, "deployment_refresh_s": 3600}
    async with (
        running_registry(tmp_path / "host-a", backends, Appointed(True), **slow) as first,
        running_registry(tmp_path / "host-b", backends, Appointed(False), **slow) as second,
    ):
        notifications = PostgresNotifications(gateway_database)
        notifications.subscribe(REGISTRY_CHANNEL, second.registry.changed_elsewhere)
        await notifications.start()
        try:
            await first.push(sklearn_pkg)
            await wait_until(lambda: second.registry.is_loaded(MODEL), "the other host to serve the push", 5)

            downloaded = await second.registry.package_path(MODEL, 1)
            assert same_bytes(downloaded, sklearn_pkg)
            assert not (tmp_path / "host-b" / "repository" / MODEL / "1").exists()

            # The first host is gone; the second leads and reloads a restarted server from its own
            # repository, laid out from the blob store.
            unload_behind_the_gateways_back(server)
            await second.registry.reconcile()
            assert served_versions(server.address, MODEL) == {"1"}
            assert (tmp_path / "host-b" / "repository" / MODEL / "1" / "model.onnx").is_file()
        finally:
            await notifications.close()


async def test_gateway_hosts_sharing_an_s3_bucket_serve_each_others_pushes(
    tmp_path: Path,
    server: ServerProcess,
    sklearn_pkg: Path,
    gateway_database: str | None,
    seaweedfs: SeaweedFS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Packages in a real S3-compatible store (SeaweedFS), named by the settings as an operator
    would: the second host lays the version out from the bucket, verified by digest."""
    if gateway_database is None:
        pytest.skip("gateway hosts with separate data folders share a PostgreSQL database, not SQLite")
    for name, value in {
        "MDEPLOY_PACKAGE_STORE": "s3",
        "MDEPLOY_S3_BUCKET": BUCKET,
        "MDEPLOY_S3_PREFIX": f"{tmp_path.name}/",
        "MDEPLOY_S3_ENDPOINT_URL": seaweedfs.endpoint,
        "MDEPLOY_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }.items():
        monkeypatch.setenv(name, value)
    backends = [server.address]
    async with (
        running_registry(tmp_path / "host-a", backends, Appointed(True), reconcile_interval_s=3600) as first,
        running_registry(
            tmp_path / "host-b", backends, Appointed(False), reconcile_interval_s=3600
        ) as second,
    ):
        pushed = await first.push(sklearn_pkg)
        assert await second.stored_packages() == {pushed.record.digest}

        unload_behind_the_gateways_back(server)
        await second.registry.reconcile()

        assert served_versions(server.address, MODEL) == {"1"}
        assert same_bytes(await second.registry.package_path(MODEL, 1), sklearn_pkg)
