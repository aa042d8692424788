"""Run ``mdeploy serve`` as a child process and wait until it answers.

Used by tests and benchmarks, and handy for running several gateway replicas on one host.
The port comes from uvicorn's own log line (pass port 0 for a free one); readiness from
``/v2/health/live``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.local import ADMIN_KEY_FILE

_RUNNING = re.compile(r"Uvicorn running on http://([\d.]+):(\d+)")


@dataclass
class GatewayProcess:
    process: subprocess.Popen[str]
    url: str
    data_dir: Path
    log_lines: deque[str]
    log_reader: threading.Thread

    @property
    def admin_key(self) -> str:
        return (self.data_dir / ADMIN_KEY_FILE).read_text().strip()

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (uvicorn finishes in-flight requests), SIGKILL after ``timeout_s``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "mdeploy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mdeploy.cli"]


def start_gateway_process(
    data_dir: Path,
    backends: list[str],
    *,
    port: int = 0,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    ready_timeout_s: float = 120.0,
) -> GatewayProcess:
    """``mdeploy serve`` on 127.0.0.1 with the given inference servers; returns once it answers."""
    args = ["serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
    for backend in backends:
        args += ["--backend", backend]
    process = subprocess.Popen(
        [*gateway_command(), *args, *(extra_args or [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    lines: deque[str] = deque(maxlen=5000)
    found: list[str] = []
    bound = threading.Event()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = _RUNNING.search(line)
            if match and not found:
                found.append(f"http://{match.group(1)}:{match.group(2)}")
                bound.set()
        bound.set()

    reader = threading.Thread(target=drain, daemon=True, name="mdeploy-gateway-log")
    reader.start()
    gateway = GatewayProcess(process, "", data_dir, lines, reader)
    if not bound.wait(ready_timeout_s) or not found:
        gateway.stop(timeout_s=5)
        raise RuntimeError("mdeploy serve did not start:\n" + "".join(lines))
    gateway.url = found[0]
    deadline = time.monotonic() + ready_timeout_s
    while not _live(gateway.url):
        if process.poll() is not None or time.monotonic() > deadline:
            gateway.stop(timeout_s=5)
            raise RuntimeError("mdeploy serve is not answering:\n" + "".join(lines))
        time.sleep(0.05)
    return gateway


def _live(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/live", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
