"""The workers' supervisor with stand-in workers: restarts with back-off, gives up, stops on a signal.

A stand-in is a few lines of Python that speak the control protocol (read the configuration,
answer ``ready``) and then do what the test needs; the real worker is tested in
``tests/e2e/test_workers.py``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings
from gateway.workers.control import WorkerConfig
from gateway.workers.supervisor import RestartPolicy, Supervisor, WorkersFailed

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

_STAND_IN = """
import socket, sys, time
channel = socket.socket(fileno=int(sys.argv[2]))
assert channel.recv(65536).endswith(b"\\n")  # its configuration
{behaviour}
"""
READY_THEN_CRASH = "channel.sendall(b'ready\\n'); time.sleep(0.2); sys.exit(3)"
CRASH_AT_ONCE = "sys.exit(3)"
READY_UNTIL_SIGNALLED = "channel.sendall(b'ready\\n'); time.sleep(600)"
QUICK = RestartPolicy(first_delay_s=0.05, max_delay_s=0.2, stable_after_s=60, max_per_minute=4)


def supervisor(
    tmp_path: Path, behaviour: str, count: int = 2, on_ready: Callable[[], None] | None = None
) -> Supervisor:
    settings = GatewaySettings(data_dir=tmp_path)
    return Supervisor(
        lambda index: WorkerConfig(index, settings, tmp_path / "leader.lock"),
        count,
        stop_after_s=1,
        on_ready=on_ready or (lambda: None),
        policy=QUICK,
        command=(sys.executable, "-c", _STAND_IN.format(behaviour=behaviour)),
    )


def test_a_dying_worker_is_restarted_with_growing_delays_until_the_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.workers.supervisor")

    with pytest.raises(WorkersFailed, match=r"after 4 restarts in the last minute \(at most 4\)"):
        supervisor(tmp_path, READY_THEN_CRASH, count=1).run()

    delays = re.findall(r"died \(exit status 3\) after [\d.]+ s; restarting it in ([\d.]+) s", caplog.text)
    assert delays == ["0.1", "0.1", "0.2", "0.2"]  # 0.05 s, doubling, at most 0.2 (shown rounded)
    assert "stopping the gateway" in caplog.text


def test_a_worker_that_never_listens_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(
        WorkersFailed, match=r"worker \d \(pid \d+\) stopped before it listened \(exit status 3\)"
    ):
        supervisor(tmp_path, CRASH_AT_ONCE).run()


def test_sigterm_stops_every_worker_once_they_all_listen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.workers.supervisor")
    ready: list[bool] = []

    def listening() -> None:
        ready.append(True)
        os.kill(os.getpid(), signal.SIGTERM)  # to this process: the supervisor's handler has it

    running = supervisor(tmp_path, READY_UNTIL_SIGNALLED, on_ready=listening)
    before = signal.getsignal(signal.SIGTERM)
    running.run()

    assert ready == [True]
    assert all(w.process is not None and w.process.returncode == -signal.SIGTERM for w in running.workers)
    assert "SIGTERM: stopping the workers" in caplog.text
    assert signal.getsignal(signal.SIGTERM) == before  # the supervisor's handler is gone again
