"""Run ``mdeploy-server`` as a child process and wait until it is ready.

Used by ``mdeploy serve`` to start a local server, and by tests and benchmarks. Readiness
is read from the server itself: the port from its log line, then the grpc.health.v1 check.
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
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_LISTENING = re.compile(r"mdeploy-server listening on (\S+):(\d+)")


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    host: str
    port: int
    log_lines: deque[str] = field(default_factory=lambda: deque(maxlen=2000))
    log_reader: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def is_serving(self, timeout_s: float = 1.0) -> bool:
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.is_serving():
            if self.process.poll() is not None:
                raise RuntimeError(f"mdeploy-server exited with {self.process.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mdeploy-server not ready after {timeout_s}s:\n{self.log}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (graceful drain), then SIGKILL if it outlives ``timeout_s``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no drain, as when a machine dies."""
        self.process.kill()
        self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self.log_reader is not None:
            self.log_reader.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()


def server_command() -> list[str]:
    script = Path(sys.executable).parent / "mdeploy-server"
    return [str(script)] if script.exists() else [sys.executable, "-m", "servers.cli"]


def start_server_process(
    args: list[str], *, env: dict[str, str] | None = None, ready_timeout_s: float = 60.0
) -> ServerProcess:
    """Start ``mdeploy-server ARGS`` (pass ``--grpc-port 0`` for a free port) and wait until ready."""
    process = subprocess.Popen(
        [*server_command(), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: deque[str] = deque(maxlen=2000)
    found: list[tuple[str, int]] = []
    bound = threading.Event()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            match = _LISTENING.search(line)
            if match and not found:
                found.append((match.group(1), int(match.group(2))))
                bound.set()
        bound.set()

    reader = threading.Thread(target=drain, daemon=True, name="mdeploy-server-log")
    reader.start()
    if not bound.wait(ready_timeout_s) or not found:
        process.kill()
        process.wait()
        reader.join(timeout=5)
        if process.stderr is not None:
            process.stderr.close()
        raise RuntimeError("mdeploy-server did not start:\n" + "".join(lines))
    host, port = found[0]
    server = ServerProcess(process, host, port, lines, reader)
    try:
        server.wait_ready(ready_timeout_s)
    except BaseException:
        server.kill()
        raise
    return server
