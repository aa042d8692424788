"""The data plane in process: checks before any backend call, batching, errors, routing.

The backends are ``tests.gateway.fakes.FakeBackends`` (the real pool has its own tests); the
router below is the real one on a real SQLite database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from core.errors import DeadlineExceeded, InvalidInput, PayloadTooLarge, Unavailable
from gateway.database.engine import SQLiteDatabase
from gateway.dataplane import DataPlane, InferenceRequest
from gateway.db import open_database
from gateway.routing.deployments import DeploymentStore
from gateway.routing.guard import GuardSpec
from gateway.routing.ledger import DatabaseLedger
from gateway.routing.policies import PolicySpec
from gateway.routing.router import Router
from gateway.routing.stats import BufferedStats, DatabaseStats
from gateway.settings import GatewaySettings
from tests.gateway.fakes import Catalog, FakeBackends, served


def rows(count: int, value: float = 1.0) -> dict[str, np.ndarray]:
    return {"x": np.full((count, 4), value, np.float32)}


@pytest.fixture
def catalog() -> Catalog:
    return Catalog({"m": [served("1"), served("2")]})


@pytest.fixture
def backends() -> FakeBackends:
    return FakeBackends()


@pytest.fixture
async def plane(tmp_path: Path, catalog: Catalog, backends: FakeBackends) -> AsyncIterator[DataPlane]:
    settings = GatewaySettings(data_dir=tmp_path, max_rows_per_request=8, batch_max_delay_ms=20)
    dataplane = DataPlane(catalog, backends, settings)
    yield dataplane
    await dataplane.close()


async def test_a_request_without_a_version_gets_the_default_and_its_answer(
    plane: DataPlane, backends: FakeBackends
) -> None:
    result = await plane.infer(InferenceRequest("m", None, rows(2)))
    assert result.version == "2"
    np.testing.assert_array_equal(result.outputs["y"], np.full((2, 4), 3.0))  # 2x + (2 - 1)
    assert [call.model_version for call in backends.calls] == ["2"]


async def test_concurrent_requests_share_one_backend_call_and_get_their_own_rows(
    plane: DataPlane, backends: FakeBackends
) -> None:
    backends.hold = asyncio.Event()
    first = asyncio.create_task(plane.infer(InferenceRequest("m", "1", rows(1, 0.0))))
    await backends.called.wait()  # the first goes at once; the others queue behind it
    rest = [asyncio.create_task(plane.infer(InferenceRequest("m", "1", rows(n, n)))) for n in (1, 2, 3)]
    for _ in range(5):  # let each new task run up to its wait in the batcher's queue
        await asyncio.sleep(0)
    assert [s.queue_length for s in plane.batcher_stats()] == [3]
    backends.hold.set()
    answers = await asyncio.gather(first, *rest)
    assert [a.outputs["y"].shape[0] for a in answers] == [1, 1, 2, 3]
    assert [float(a.outputs["y"][0, 0]) for a in answers] == [0.0, 2.0, 4.0, 6.0]
    assert len(backends.calls) == 2  # the three that waited went as one batch of 6 rows
    assert list(backends.calls[1].inputs[0].shape) == [6, 4]


@pytest.mark.parametrize(
    ("inputs", "error", "says"),
    [
        ({"x": np.zeros((1, 3), np.float32)}, InvalidInput, "input 'x'"),
        ({"z": np.zeros((1, 4), np.float32)}, InvalidInput, "'z'"),
        (rows(9), PayloadTooLarge, "9 rows; the limit is 8"),
    ],
)
async def test_bad_requests_fail_before_any_backend_call(
    plane: DataPlane,
    backends: FakeBackends,
    inputs: dict[str, np.ndarray],
    error: type[Exception],
    says: str,
) -> None:
    with pytest.raises(error, match=says):
        await plane.infer(InferenceRequest("m", "1", inputs))
    assert backends.calls == []


async def test_a_failed_batch_fails_every_request_in_it_and_the_plane_keeps_serving(
    plane: DataPlane, backends: FakeBackends
) -> None:
    backends.fail_with = Unavailable("no inference server is available")
    results = await asyncio.gather(
        *(plane.infer(InferenceRequest("m", "1", rows(1))) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Unavailable) for r in results)
    backends.fail_with = None
    assert (await plane.infer(InferenceRequest("m", "1", rows(1)))).version == "1"


@pytest.fixture
async def router(tmp_path: Path, catalog: Catalog) -> AsyncIterator[Router]:
    connection = open_database(tmp_path / "routing.sqlite3")
    database = SQLiteDatabase.open(connection)
    routing = Router(
        DeploymentStore(database),
        catalog,
        BufferedStats(DatabaseStats(database)),
        DatabaseLedger(database, 60, 1000),
        refresh_s=3600,
        seed=7,
    )
    await routing.start()
    yield routing
    await routing.close()
    await routing.stats.aclose()
    await routing.ledger.aclose()
    connection.close()


async def test_a_canary_splits_unversioned_requests_and_remembers_them_for_feedback(
    tmp_path: Path, catalog: Catalog, backends: FakeBackends, router: Router
) -> None:
    spec = PolicySpec(kind="canary", versions=["1", "2"], weights={"1": 50, "2": 50})
    await router.rollout("m", spec, GuardSpec(enabled=False), "test", "half and half")
    plane = DataPlane(catalog, backends, GatewaySettings(data_dir=tmp_path), router=router)
    try:
        answered = [
            (await plane.infer(InferenceRequest("m", None, rows(1), request_id=f"r{i}"))).version
            for i in range(200)
        ]
    finally:
        await plane.close()
    assert 60 < answered.count("1") < 140  # 100 expected; binomial(200, 0.5) stays well inside
    assert await router.feedback("m", "r0", 1.0) == answered[0]


async def test_the_guard_rolls_a_failing_candidate_back_to_the_stable_version(
    tmp_path: Path, catalog: Catalog, backends: FakeBackends, router: Router
) -> None:
    await router.promote("m", "1", "test", "stable")
    spec = PolicySpec(kind="canary", versions=["1", "2"], weights={"1": 50, "2": 50})
    await router.rollout("m", spec, GuardSpec(min_requests=20), "test", "try 2")
    backends.fail_with = Unavailable("version 2 is broken")
    backends.failing_versions = {"2"}
    plane = DataPlane(catalog, backends, GatewaySettings(data_dir=tmp_path), router=router)
    try:
        for _ in range(120):
            with contextlib.suppress(Unavailable):
                await plane.infer(InferenceRequest("m", None, rows(1)))
        after = [(await plane.infer(InferenceRequest("m", None, rows(1)))).version for _ in range(30)]
    finally:
        await plane.close()
    assert after == ["1"] * 30
    deployment = router.deployment("m")
    assert deployment is not None
    assert deployment.spec.versions == ["1"]


async def test_a_deadline_passed_in_the_queue_fails_that_request_only(
    tmp_path: Path, catalog: Catalog, backends: FakeBackends
) -> None:
    settings = GatewaySettings(data_dir=tmp_path, batch_max_delay_ms=5_000)  # queued ones wait for the batch
    plane = DataPlane(catalog, backends, settings)
    backends.hold = asyncio.Event()
    first = asyncio.create_task(plane.infer(InferenceRequest("m", "1", rows(1))))
    await backends.called.wait()
    with pytest.raises(DeadlineExceeded, match=r"timed out after 0\.050s in queue"):
        await plane.infer(InferenceRequest("m", "1", rows(1), timeout_s=0.05))
    assert [s.queue_length for s in plane.batcher_stats()] == [0]
    backends.hold.set()
    assert (await first).version == "1"
    await plane.close()


async def test_a_caller_that_goes_away_frees_its_place_in_the_queue(
    tmp_path: Path, catalog: Catalog, backends: FakeBackends
) -> None:
    plane = DataPlane(catalog, backends, GatewaySettings(data_dir=tmp_path, batch_max_delay_ms=5_000))
    backends.hold = asyncio.Event()
    first = asyncio.create_task(plane.infer(InferenceRequest("m", "1", rows(1))))
    await backends.called.wait()
    gone = asyncio.create_task(plane.infer(InferenceRequest("m", "1", rows(1))))
    for _ in range(5):
        await asyncio.sleep(0)
    assert [s.queue_length for s in plane.batcher_stats()] == [1]
    gone.cancel()  # what grpc.aio does to a call whose client cancelled
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    assert [s.queue_length for s in plane.batcher_stats()] == [0]
    backends.hold.set()
    await first
    assert len(backends.calls) == 1
    await plane.close()
