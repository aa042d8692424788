"""Run ``mdeploy serve`` as a child process and wait until it answers.

Used by tests and benchmarks, and handy for running several gateway replicas on one host.
The port comes from uvicorn's own log line (pass port 0 for a free one); readiness from
``/v2/health/live``.
"""

from __future__ import annotations

import re
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.child_process import ChildProcess, spawn
from gateway.local import ADMIN_KEY_FILE

_RUNNING = re.compile(r"Uvicorn running on (https?)://([\d.]+):(\d+)")


@dataclass
class GatewayProcess(ChildProcess):
    url: str = ""
    data_dir: Path = Path()
    grpc_address: str = ""
    """host:port of its gRPC API; empty when it has none."""

    @property
    def admin_key(self) -> str:
        return (self.data_dir / ADMIN_KEY_FILE).read_text().strip()


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "mdeploy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mdeploy"]


def start_gateway_process(
    data_dir: Path,
    backends: list[str],
    *,
    port: int = 0,
    grpc_port: int = 0,
    tls_ca: Path | None = None,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    ready_timeout_s: float = 120.0,
) -> GatewayProcess:
    """``mdeploy serve`` on 127.0.0.1 with the given inference servers; returns once it answers.

    ``grpc_port`` 0 (the default here) leaves the gRPC API off: several gateways may run at once.
    ``tls_ca`` verifies a gateway that serves TLS (started with ``--tls-cert`` in ``extra_args``).
    """
    args = ["serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--grpc-port", str(grpc_port)]
    for backend in backends:
        args += ["--backend", backend]
    command = [*gateway_command(), *args, *(extra_args or [])]
    child, match = spawn(command, _RUNNING, env=env, timeout_s=ready_timeout_s)
    url = f"{match.group(1)}://{match.group(2)}:{match.group(3)}"
    grpc_address = f"127.0.0.1:{grpc_port}" if grpc_port else ""
    gateway = GatewayProcess(child.process, child.log_lines, child.log_reader, url, data_dir, grpc_address)
    deadline = time.monotonic() + ready_timeout_s
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=tls_ca) if tls_ca is not None else True
    while not _live(gateway.url, verify):
        if gateway.process.poll() is not None or time.monotonic() > deadline:
            gateway.stop(timeout_s=5)
            raise RuntimeError(f"mdeploy serve is not answering:\n{gateway.log}")
        time.sleep(0.05)
    return gateway


def _live(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/live", timeout=1.0, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False
