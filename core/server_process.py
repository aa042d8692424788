"""Run ``mdeploy-server`` as a child process, by its command, and wait until it is ready.

Used by the gateway's ``serve`` to start a local server, and by tests and benchmarks. It lives
in the core so that nothing above has to import the server to start one. Readiness is read from
the server itself: the port from the line it logs (``ANNOUNCE``), then the grpc.health.v1 check.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.child_process import ChildProcess, spawn

# The server logs this line once it listens (printf-style: address, port); the pattern reads it.
ANNOUNCE = "mdeploy-server listening on %s:%d"
LISTENING = re.compile(r"mdeploy-server listening on (\S+):(\d+)")


@dataclass
class ServerProcess(ChildProcess):
    host: str = ""
    port: int = 0
    metadata: tuple[tuple[str, str], ...] = ()
    """Sent with the health checks below (the server token, for a server that wants it there too)."""
    credentials: grpc.ChannelCredentials | None = None
    """TLS credentials, for a server that serves TLS."""

    def channel(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, self.credentials)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def is_serving(self, timeout_s: float = 1.0) -> bool:
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                check = health_pb2.HealthCheckRequest(service="")
                reply = stub.Check(check, timeout=timeout_s, metadata=self.metadata)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    @classmethod
    def started(
        cls,
        child: ChildProcess,
        announced: re.Match[str],
        ready_timeout_s: float,
        metadata: tuple[tuple[str, str], ...] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> ServerProcess:
        """The server announced in ``announced`` (host, port), once its health check passes."""
        host, port = announced.group(1), int(announced.group(2))
        server = cls(child.process, child.log_lines, child.log_reader, host, port, metadata, credentials)
        try:
            server.wait_ready(ready_timeout_s)
        except BaseException:
            server.kill()
            raise
        return server

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.is_serving():
            if self.process.poll() is not None:
                raise RuntimeError(f"mdeploy-server exited with {self.process.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mdeploy-server not ready after {timeout_s}s:\n{self.log}")
            time.sleep(0.05)


def server_command() -> list[str]:
    """The installed ``mdeploy-server`` script beside this Python, else the module it runs."""
    script = Path(sys.executable).parent / "mdeploy-server"
    return [str(script)] if script.exists() else [sys.executable, "-m", "servers.cli"]


def start_server_process(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 60.0,
    metadata: tuple[tuple[str, str], ...] = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> ServerProcess:
    """Start ``mdeploy-server ARGS`` (pass ``--grpc-port 0`` for a free port) and wait until ready;
    ``metadata`` goes with its health checks, over TLS with ``credentials``."""
    child, announced = spawn(
        [*server_command(), *args], LISTENING, env=env, timeout_s=ready_timeout_s, log_to_stderr=True
    )
    return ServerProcess.started(child, announced, ready_timeout_s, metadata, credentials)
