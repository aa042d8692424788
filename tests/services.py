"""Real services the tests start on loopback (redis-server, PostgreSQL) and free ports for them.

Kept outside any conftest so that every test folder, and the root conftest, can import them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from core.ports import free_port


def redis_answers(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")
    return False


class RedisServer:
    """``redis-server`` on a free loopback port, without persistence; can be stopped and restarted.

    ``host`` and ``port`` place it elsewhere: in a network namespace of ``tests.netns``, whose
    ``Host.call`` runs ``start`` there (the process and the readiness probe are that host's)."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", self.host]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        if not ipaddress.ip_address(self.host).is_loopback:  # protected mode answers only loopback
            command += ["--protected-mode", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_answers(self.port, self.host):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def _postgres_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, or where Debian's postgresql package puts it."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    if not candidates:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package (make system-deps)")
    return str(candidates[0])


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free loopback port (``initdb`` + ``postgres``, no
    fsync), trusting local connections; run as the ``postgres`` user when the tests run as root,
    which PostgreSQL refuses to run as.

    ``host`` and ``port`` place it elsewhere: in a network namespace of ``tests.netns``, whose
    ``Host.call`` runs ``start`` there (``trust`` then admits that host's network too)."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="mdeploy-postgres-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"
        subprocess.run(
            [*self._as_user, _postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        if not ipaddress.ip_address(host).is_loopback:  # initdb's trust covers loopback only
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all samenet trust\n")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def start(self) -> None:
        command = [*self._as_user, _postgres_bin("postgres"), "-D", str(self.data), "-p", str(self.port)]
        command += ["-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.folder}"]
        command += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with (self.folder / "postgres.log").open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not start:\n{(self.folder / 'postgres.log').read_text()[-2000:]}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        probe = [_postgres_bin("pg_isready"), "-h", self.host, "-p", str(self.port), "-U", "postgres"]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        psql = [_postgres_bin("psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres", "-q"]
        subprocess.run([*psql, "-c", f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
        return self.url(name)

    def stop(self, fast: bool = False) -> None:
        """A smart shutdown (waits for the clients to leave), or with ``fast`` a fast one
        (``pg_ctl stop -m fast``: clients are disconnected, as in a restart)."""
        if self.process is not None:
            if fast:
                pg_ctl = [_postgres_bin("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"]
                subprocess.run([*self._as_user, *pg_ctl], check=False, capture_output=True)
            self.process.terminate()  # smart shutdown: waits for clients, then stops
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
