"""The supervisor: ``mdeploy serve --workers N`` runs N gateway processes on the same ports.

``mdeploy serve`` prepares what the workers share once (the admin key, the local inference
server), then this module:

- reserves the HTTP and gRPC ports: a socket bound with SO_REUSEPORT, never listening, so port
  0 becomes one concrete port, nothing else can take it while the workers restart, and the
  kernel balances connections between the workers' own listening sockets on it;
- starts each worker (``python -m gateway.workers.worker``, in a process group of its own so
  that a terminal's Ctrl-C reaches the supervisor only) and hands it its configuration over a
  socket pair (``gateway.workers.control``);
- restarts a worker that dies, after 0.5 s, doubling up to 10 s while it keeps dying young;
  past 10 restarts in a minute (``RestartPolicy``) it stops the gateway with an error, for
  whatever runs ``mdeploy serve`` (systemd, Kubernetes) to act on;
- on SIGTERM or SIGINT sends SIGTERM to every worker, which stops accepting and drains (at
  most ``shutdown_grace_s``), and waits; a second signal forces them (SIGINT: uvicorn's quick
  exit), and what still runs when the wait is over is killed.

Exactly one worker runs the singleton work (``gateway.leadership.FileLockLeadership``).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal
from urllib.parse import urlsplit

from core.errors import InvalidInput, MdeployError
from gateway.settings import GatewaySettings
from gateway.workers.control import READY, WorkerConfig

log = logging.getLogger(__name__)

WORKER_COMMAND = (sys.executable, "-m", "gateway.workers.worker")
STOP_MARGIN_S = 15.0
"""Beyond ``shutdown_grace_s``: a worker closes its parts after its requests drained."""
_TICK_S = 0.1


class WorkersFailed(MdeployError):
    """The gateway's workers could not be kept running."""


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    stable_after_s: float = 60.0
    """A worker that ran this long before dying is restarted after the first delay again."""
    max_per_minute: int = 10
    """All workers together: more means something is broken that restarting does not fix."""


def worker_count(setting: int | Literal["auto"]) -> int:
    """``auto``: the cores this process may run on (its CPU affinity, as a container limits it)."""
    if setting != "auto":
        return setting
    counted = getattr(os, "process_cpu_count", None)  # Python 3.13
    if counted is not None:
        return int(counted() or 1)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_shared_limits(settings: GatewaySettings, count: int) -> None:
    """Refuse in-memory rate limits with several workers: each would count on its own, and a key
    would get up to ``count`` times its limit through one address."""
    if count > 1 and urlsplit(settings.rate_limit_storage).scheme.removeprefix("async+") == "memory":
        raise InvalidInput(
            f"--workers {count} needs rate-limit counters the workers share: with "
            f"MDEPLOY_RATE_LIMIT_STORAGE={settings.rate_limit_storage} each worker counts on its own, and "
            f"a key could make up to {count}x its limit. Set MDEPLOY_RATE_LIMIT_STORAGE=redis://HOST:PORT "
            "(README 'Gateway workers'), or serve with --workers 1"
        )


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT and never listening: it holds the port
    (resolving 0) for workers that bind it too, and takes no connection itself."""
    return _shared_socket(host, port)


def listening_socket(host: str, port: int) -> socket.socket:
    """A worker's own socket on the shared port, bound but not yet listening: the server listens
    once the app has started, so no connection waits on a worker that cannot answer yet."""
    return _shared_socket(host, port, reuse_address=True)  # as uvicorn binds its own


def _shared_socket(host: str, port: int, *, reuse_address: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _described(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


@dataclass
class Worker:
    """One worker slot: the process now in it, and when to start the next one after a death."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    channel: socket.socket | None = None
    ready: bool = False
    started_at: float = 0.0
    restart_at: float | None = None
    delay_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signum)


@dataclass
class Supervisor:
    """Starts, restarts and stops the workers of one ``mdeploy serve`` (module docstring)."""

    configs: Callable[[int], WorkerConfig]
    count: int
    stop_after_s: float
    on_ready: Callable[[], None] = lambda: None
    """Called once, when every worker first listens."""
    policy: RestartPolicy = RestartPolicy()
    command: tuple[str, ...] = WORKER_COMMAND
    workers: list[Worker] = field(default_factory=list)
    _selector: selectors.DefaultSelector = field(default_factory=selectors.DefaultSelector)
    _signals: deque[int] = field(default_factory=deque)
    _restarts: deque[float] = field(default_factory=deque)
    _announced: bool = False

    def run(self) -> None:
        """Until SIGTERM or SIGINT (then drain and return), or until workers cannot be kept up."""
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            self.workers = [Worker(i, delay_s=self.policy.first_delay_s) for i in range(1, self.count + 1)]
            for worker in self.workers:
                self._start(worker)
            try:
                while not self._signals:
                    self._step()
            except WorkersFailed as failure:
                log.error("%s", failure.message)
                self._stop("gave up")
                raise
            self._stop(signal.Signals(self._signals.popleft()).name)
        except BaseException:
            self._kill_all()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._selector.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    # ---- running ----

    def _start(self, worker: Worker) -> None:
        ours, theirs = socket.socketpair()
        command = [*self.command, "--control-fd", str(theirs.fileno())]
        try:
            worker.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), process_group=0
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.sendall(self.configs(worker.index).encode())
        worker.channel, worker.ready, worker.restart_at = ours, False, None
        worker.started_at = time.monotonic()
        self._selector.register(ours, selectors.EVENT_READ, worker)
        log.info("worker %d started (pid %d)", worker.index, worker.pid)

    def _step(self) -> None:
        for key, _ in self._selector.select(_TICK_S):
            self._read(key.data)
        now = time.monotonic()
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is not None:
                self._died(worker, now)
            elif worker.process is None and worker.restart_at is not None and now >= worker.restart_at:
                self._start(worker)

    def _read(self, worker: Worker) -> None:
        assert worker.channel is not None
        try:
            data = worker.channel.recv(64)
        except OSError:
            data = b""
        if data.startswith(READY) and not worker.ready:
            worker.ready = True
            log.info("worker %d (pid %d) ready", worker.index, worker.pid)
            if not self._announced and all(w.ready for w in self.workers):
                self._announced = True
                self.on_ready()
        elif not data:
            self._forget_channel(worker)  # the process is exiting: poll() reports it

    def _forget_channel(self, worker: Worker) -> None:
        if worker.channel is not None:
            self._selector.unregister(worker.channel)
            worker.channel.close()
            worker.channel = None

    def _died(self, worker: Worker, now: float) -> None:
        assert worker.process is not None
        how = _described(worker.process.returncode)
        pid, was_ready, lived_s = worker.pid, worker.ready, now - worker.started_at
        self._forget_channel(worker)
        worker.process, worker.ready = None, False
        if not self._announced and not was_ready:
            raise WorkersFailed(
                f"gateway worker {worker.index} (pid {pid}) stopped before it listened ({how}); "
                "its log is above"
            )
        while self._restarts and now - self._restarts[0] > 60.0:
            self._restarts.popleft()
        policy = self.policy
        if len(self._restarts) >= policy.max_per_minute:
            raise WorkersFailed(
                f"gateway worker {worker.index} (pid {pid}) died ({how}) after {len(self._restarts)} "
                f"restarts in the last minute (at most {policy.max_per_minute}); stopping the gateway"
            )
        if lived_s >= policy.stable_after_s:
            worker.delay_s = policy.first_delay_s
        self._restarts.append(now)
        worker.restart_at = now + worker.delay_s
        log.warning(
            "worker %d (pid %d) died (%s) after %.1f s; restarting it in %.1f s (%d restart(s) in the "
            "last minute, at most %d)",
            worker.index,
            pid,
            how,
            lived_s,
            worker.delay_s,
            len(self._restarts),
            policy.max_per_minute,
        )
        worker.delay_s = min(worker.delay_s * 2, policy.max_delay_s)

    # ---- stopping ----

    def _stop(self, why: str) -> None:
        """SIGTERM to every worker, then wait for them to drain; another signal forces them."""
        log.info("%s: stopping the workers; requests in flight get %s s", why, self.stop_after_s)
        for worker in self.workers:
            worker.restart_at = None
            worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_after_s + STOP_MARGIN_S
        while any(w.running() for w in self.workers) and time.monotonic() < deadline:
            if self._signals:
                self._signals.clear()
                log.info("signal again: workers stop without waiting for requests in flight")
                for worker in self.workers:
                    worker.signal(signal.SIGINT)  # uvicorn's second Ctrl-C: force
            time.sleep(_TICK_S)
        self._kill_all()
        for worker in self.workers:
            if worker.process is not None:
                log.info(
                    "worker %d (pid %d) stopped (%s)",
                    worker.index,
                    worker.pid,
                    _described(worker.process.returncode),
                )
            self._forget_channel(worker)

    def _kill_all(self) -> None:
        for worker in self.workers:
            if worker.running():
                assert worker.process is not None
                log.warning("worker %d (pid %d) did not stop in time: killing it", worker.index, worker.pid)
                worker.process.kill()
            if worker.process is not None:
                worker.process.wait()


def base_url(settings: GatewaySettings, port: int) -> str:
    scheme = "https" if settings.tls_cert_file else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{scheme}://{host}:{port}"


def run_workers(settings: GatewaySettings, count: int, lock: Path, on_ready: Callable[[str], None]) -> None:
    """Serve ``settings`` (ports checked free, backends final) with ``count`` workers until
    stopped; ``on_ready(base_url)`` once they all listen."""
    reservations = [reserve_port(settings.host, settings.port)]
    try:
        port = reservations[0].getsockname()[1]
        if settings.grpc_port:
            reservations.append(reserve_port(settings.host, settings.grpc_port))
        shared = settings.model_copy(update={"port": port})
        url = base_url(settings, port)

        def announce() -> None:
            # The line uvicorn prints when one process serves, which tools wait for.
            print(f"Uvicorn running on {url} with {count} workers (Press CTRL+C to quit)", flush=True)
            on_ready(url)

        Supervisor(
            lambda index: WorkerConfig(index, shared, lock), count, settings.shutdown_grace_s, announce
        ).run()
    finally:
        for reservation in reservations:
            reservation.close()
