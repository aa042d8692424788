"""A gateway worker: ``python -m gateway.workers.worker --control-fd N``, started by the supervisor.

It reads its configuration from the control socket (``gateway.workers.control``), runs the same
app as a single ``mdeploy serve`` process, under the same uvicorn configuration, on its own
SO_REUSEPORT socket, with leadership by file lock, and says ``ready`` once it listens. It stops
on SIGTERM (drain, as ``mdeploy serve`` does) and when the supervisor's end of the control socket
closes (the supervisor died: the ports must not stay held by orphans).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys

import uvicorn
import uvloop

from gateway.app import create_app
from gateway.leadership import FileLockLeadership
from gateway.local import uvicorn_config
from gateway.workers.control import READY, WorkerConfig, read_line
from gateway.workers.supervisor import listening_socket

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
"""The supervisor's format with the worker's pid: the workers share one log."""


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # uvicorn re-raises SIGTERM once it has drained: exit 0, as a stop that went to plan.
    raise SystemExit(0)


async def _report_ready(server: uvicorn.Server, channel: socket.socket) -> None:
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(0.05)
    with contextlib.suppress(OSError):  # the supervisor is gone: its end-of-file stops us anyway
        channel.sendall(READY)


def _watch_supervisor(server: uvicorn.Server, channel: socket.socket) -> None:
    def readable() -> None:
        try:
            data = channel.recv(64)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(channel.fileno())
            log.warning("the supervisor is gone: stopping")
            server.should_exit = True

    asyncio.get_running_loop().add_reader(channel.fileno(), readable)


async def _serve(config: WorkerConfig, channel: socket.socket) -> None:
    settings = config.settings
    # Workers on one host share a flock; gateways on several hosts, PostgreSQL's advisory lock.
    leadership = None if settings.database_url else FileLockLeadership(config.lock)
    app = create_app(settings, leadership=leadership, shared_ports=True)
    server = uvicorn.Server(uvicorn_config(settings, app))
    sock = listening_socket(settings.host, settings.port)
    _watch_supervisor(server, channel)
    ready = asyncio.create_task(_report_ready(server, channel))
    try:
        await server.serve(sockets=[sock])
    finally:
        ready.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    channel = socket.socket(fileno=args.control_fd)
    line = read_line(channel)
    if not line:
        return 1  # the supervisor died before it told us anything
    config = WorkerConfig.decode(line)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    log.info("gateway worker %d on %s:%d", config.index, config.settings.host, config.settings.port)
    try:
        # As in gateway.local: this process makes the loop, so it asks for uvloop itself.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(config, channel))
    except KeyboardInterrupt:
        pass  # uvicorn re-raises a forced stop (the supervisor's second signal) once it is done
    return 0


if __name__ == "__main__":
    sys.exit(main())
