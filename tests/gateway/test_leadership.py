"""One process leads: the flock holder; the lead moves when it closes or dies; worker settings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import InvalidInput
from gateway.leadership import FileLockLeadership, SoleProcess, lock_path
from gateway.settings import GatewaySettings
from gateway.workers.control import WorkerConfig
from gateway.workers.supervisor import check_shared_limits, worker_count
from tests.gateway.registry_support import wait_until

RETRY_S = 0.05


async def test_a_sole_process_leads() -> None:
    sole = SoleProcess()
    await sole.start()
    assert sole.is_leader
    await sole.close()


async def test_of_two_processes_on_one_lock_exactly_one_leads(tmp_path: Path) -> None:
    # flock belongs to an open file: two openings in one process compete as two processes do.
    first, second = (FileLockLeadership(tmp_path / "leader.lock", retry_s=RETRY_S) for _ in range(2))
    await first.start()
    await second.start()
    try:
        await asyncio.sleep(3 * RETRY_S)
        assert (first.is_leader, second.is_leader) == (True, False)
    finally:
        await first.close()
        await second.close()


async def test_the_lead_moves_when_the_leader_closes(tmp_path: Path) -> None:
    first, second = (FileLockLeadership(tmp_path / "leader.lock", retry_s=RETRY_S) for _ in range(2))
    await first.start()
    await second.start()
    try:
        await first.close()
        assert not first.is_leader
        await wait_until(lambda: second.is_leader, "the second to lead", timeout_s=5)
    finally:
        await second.close()


# A holder that dies by SIGKILL releases nothing itself: the kernel does, with its open files.
_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``leader.lock``."""
    command = [sys.executable, "-c", _HOLDER, str(tmp_path / "leader.lock")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == "locked\n"
    yield process
    process.kill()
    process.wait()
    process.stdout.close()


@pytest.mark.e2e
async def test_the_lead_moves_when_the_leader_is_killed(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    waiting = FileLockLeadership(tmp_path / "leader.lock", retry_s=RETRY_S)
    await waiting.start()
    try:
        await asyncio.sleep(3 * RETRY_S)
        assert not waiting.is_leader
        holder.kill()
        await wait_until(lambda: waiting.is_leader, "the lead to move from the killed holder", timeout_s=5)
    finally:
        await waiting.close()


def test_processes_managing_other_inference_servers_have_other_locks(tmp_path: Path) -> None:
    assert lock_path(tmp_path, ["a:1", "b:2"]) == lock_path(tmp_path, ["b:2", "a:1"])
    assert lock_path(tmp_path, ["a:1"]) != lock_path(tmp_path, ["a:1", "b:2"])
    assert lock_path(tmp_path, ["a:1"]).parent == tmp_path / "leader"


def test_auto_workers_is_the_cores_this_process_may_use() -> None:
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    assert worker_count(3) == 3


def test_several_workers_refuse_rate_limits_counted_per_process() -> None:
    with pytest.raises(InvalidInput, match=r"--workers 2 .* up to 2x its limit.*redis://"):
        check_shared_limits(GatewaySettings(rate_limit_storage="memory://"), 2)
    check_shared_limits(GatewaySettings(rate_limit_storage="memory://"), 1)
    check_shared_limits(GatewaySettings(rate_limit_storage="redis://127.0.0.1:6379"), 2)


def test_a_worker_gets_the_supervisors_settings_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = GatewaySettings(
        data_dir=tmp_path, port=8123, webhook_secret="s" * 16, drift_windows=["1m"], workers=2
    )
    encoded = WorkerConfig(2, settings, tmp_path / "leader" / "x.lock").encode()
    monkeypatch.setenv("MDEPLOY_PORT", "9999")  # the worker's environment adds nothing

    decoded = WorkerConfig.decode(encoded)

    assert (decoded.index, decoded.lock) == (2, tmp_path / "leader" / "x.lock")
    assert decoded.settings == settings
