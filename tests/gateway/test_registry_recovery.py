"""A push is atomic: a process that dies at any step leaves the whole version or none of it.

Each test lets a real push run in a child process that is SIGKILLed (or frozen) at one
phase, then opens a registry on the database, store and repository it left behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.server_process import ServerProcess, start_server_process
from gateway.registry import tables
from gateway.registry.records import PushPhase
from gateway.registry.stores import package_store
from gateway.registry.tables import State
from tests.gateway.registry_support import Rig, opened_database, running_registry, served_versions, wait_until

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier. Every test runs
# on SQLite and on PostgreSQL (``gateway_database``).
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("gateway_database")]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    process = start_server_process(
        ["--grpc-port", "0", "--grpc-address", "127.0.0.1", "--model-control-mode", "explicit"]
    )
    yield process
    process.stop(timeout_s=10)


@pytest.fixture
def sklearn_pkg(demo_packages: dict[str, Path]) -> Path:
    return demo_packages["digits-sklearn"]


def push_in_child(
    data_dir: Path, backend: str, package: Path, phase: PushPhase, how: str
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "tests.gateway.crashing_push",
        str(data_dir),
        backend,
        str(package),
        phase.value,
        how,
    ]
    return subprocess.Popen(command, cwd=ROOT)


def crash_at(data_dir: Path, backend: str, package: Path, phase: PushPhase) -> None:
    child = push_in_child(data_dir, backend, package, phase, "kill")
    assert child.wait(timeout=120) == -signal.SIGKILL


async def version_states(data_dir: Path) -> list[tuple[int, str]]:
    """What the database of ``data_dir``'s gateway settings holds (SQLite there, or the PostgreSQL
    of MDEPLOY_DATABASE_URL)."""
    async with opened_database(data_dir) as (database, _):
        rows = await database.read(tables.rows)
    return [(row["version"], row["state"]) for row in rows]


async def leftovers(data_dir: Path) -> dict[str, bool]:
    async with opened_database(data_dir) as (database, settings):
        stored = await package_store(settings, database).digests()
    return {
        "row": await version_states(data_dir) != [],
        "blob": stored != set(),
        "folder": (data_dir / "repository" / "digits-sklearn" / "1").is_dir(),
    }


async def assert_nothing_registered(rig: Rig) -> None:
    assert await rig.count("registry_versions") == 0
    assert await rig.count("audit_log") == 0
    assert await rig.stored_packages() == set()
    assert list(rig.settings.repository_dir.iterdir()) == []
    work = rig.settings.data_dir / "work"
    own = rig.registry.storage.session.id
    assert sorted(p.name for p in work.iterdir()) == sorted([own, f"{own}.lock"])
    assert rig.registry.model_names() == []


@pytest.mark.parametrize(
    ("phase", "left"),
    [
        (PushPhase.RESERVED, {"row": True, "blob": False, "folder": False}),
        (PushPhase.STORED, {"row": True, "blob": True, "folder": False}),
        (PushPhase.LAID_OUT, {"row": True, "blob": True, "folder": True}),
        (PushPhase.DEPLOYED, {"row": True, "blob": True, "folder": True}),
    ],
)
async def test_a_push_that_dies_before_its_commit_leaves_nothing(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path, phase: PushPhase, left: dict[str, bool]
) -> None:
    crash_at(tmp_path, server.address, sklearn_pkg, phase)
    assert await leftovers(tmp_path) == left
    assert await version_states(tmp_path) == [(1, "pending")]
    assert served_versions(server.address, "digits-sklearn") == (
        {"1"} if phase is PushPhase.DEPLOYED else set()
    )

    async with running_registry(tmp_path, [server.address]) as rig:
        await assert_nothing_registered(rig)
        await wait_until(
            lambda: served_versions(server.address, "digits-sklearn") == set(),
            "the reconcile loop to unload the version that was never committed",
        )
        # The number was never given out: the next push gets it.
        assert (await rig.push(sklearn_pkg)).record.version == 1


async def test_a_push_that_dies_after_its_commit_is_whole(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    crash_at(tmp_path, server.address, sklearn_pkg, PushPhase.COMMITTED)

    async with running_registry(tmp_path, [server.address]) as rig:
        assert await version_states(tmp_path) == [(1, State.LIVE.value)]
        assert rig.registry.resolve("digits-sklearn", None).version == "1"
        assert [e.action for e in await rig.registry.audit_events()] == ["push"]
        model_dir = rig.settings.repository_dir / "digits-sklearn"
        assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt", "labels.txt"]
        assert served_versions(server.address, "digits-sklearn") == {"1"}


async def test_the_push_of_a_live_process_is_left_alone_until_it_dies(
    tmp_path: Path, server: ServerProcess, sklearn_pkg: Path
) -> None:
    child = push_in_child(tmp_path, server.address, sklearn_pkg, PushPhase.DEPLOYED, "stop")
    try:
        await wait_until(lambda: _stopped(child.pid), "the pushing process to freeze after deploying")
        async with running_registry(tmp_path, [server.address], reconcile_interval_s=3600) as rig:
            await rig.registry.reconcile()

            # Frozen, not dead: its session lock is held, so its pending version is untouched.
            assert await version_states(tmp_path) == [(1, "pending")]
            assert await leftovers(tmp_path) == {"row": True, "blob": True, "folder": True}
            assert served_versions(server.address, "digits-sklearn") == {"1"}
            assert rig.registry.model_names() == []

            child.kill()
            child.wait(timeout=30)
            await rig.registry.reconcile()

            await assert_nothing_registered(rig)
            assert served_versions(server.address, "digits-sklearn") == set()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (state T in /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"
