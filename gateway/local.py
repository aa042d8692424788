"""``mdeploy serve``: the gateway and a local inference server on one machine, embedded defaults.

Creates the data folder; on first run makes an admin API key (printed once, saved as
``<data-dir>/admin-key`` with mode 0600); starts ``mdeploy-server`` as a child process
by its command unless backends are given; serves the gateway under uvicorn (uvloop +
httptools); runs the caller's start-up work (the CLI's demo) once it listens.
SIGINT/SIGTERM stop the gateway, then drain and stop the inference server. With
``workers`` > 1 this process supervises that many gateway processes on the same ports
(``gateway.workers``) and shares the admin key and the inference server with them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import uvicorn
import uvloop

from core.errors import InvalidInput
from core.server_process import ServerProcess, start_server_process
from core.server_token import ensure_token
from gateway.app import GatewayApp, create_app
from gateway.auth.keys import with_keys
from gateway.auth.scopes import KeyScope
from gateway.leadership import lock_path
from gateway.settings import GatewaySettings
from gateway.workers.supervisor import check_shared_limits, run_workers, worker_count

log = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin-key"
# Work to do once the gateway listens, given its base URL and the admin key (the CLI's demo).
AfterStart = Callable[[str, str], None]


@dataclass(frozen=True)
class AdminKey:
    value: str
    created: bool


def ensure_admin_key(settings: GatewaySettings) -> AdminKey:
    """The admin key of this data folder, made on first run (all scopes; stored hashed in the gateway
    database, PostgreSQL when ``settings.database_url`` is set), or the one in
    ``settings.admin_key_file``. Call it where no event loop runs (before the gateway starts)."""
    if settings.admin_key_file is not None:
        return AdminKey(_register_admin_key(settings, settings.admin_key_file), created=False)
    path = settings.data_dir / ADMIN_KEY_FILE
    if path.exists():
        return AdminKey(path.read_text().strip(), created=False)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    created = with_keys(
        settings,
        lambda keys: keys.create(scopes=list(KeyScope), name="admin (mdeploy serve)", actor="mdeploy serve"),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(created.key + "\n")
    return AdminKey(created.key, created=True)


def _register_admin_key(settings: GatewaySettings, key_file: Path) -> str:
    try:
        key = key_file.read_text().strip()
    except OSError as error:
        raise InvalidInput(f"cannot read the admin key file {key_file}: {error.strerror}") from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with_keys(
            settings,
            lambda keys: keys.register(
                key, list(KeyScope), name="admin (admin_key_file)", actor="mdeploy serve"
            ),
        )
    except InvalidInput as error:
        raise InvalidInput(f"admin key file {key_file}: {error.message}") from None
    return key


SERVER_TOKEN_FILE = "server-token"


def start_local_server(settings: GatewaySettings) -> tuple[ServerProcess, str]:
    """The local mdeploy-server, closed by this data folder's server token; and how to name it
    as a backend (``grpc://host:port?token_file=...``)."""
    token_file = settings.data_dir / SERVER_TOKEN_FILE
    ensure_token(token_file)
    work_dir = settings.data_dir / "server"
    server = start_server_process(
        [
            *("--grpc-port", "0", "--model-control-mode", "explicit", "--work-dir", str(work_dir)),
            *("--auth-token-file", str(token_file)),
        ]
    )
    return server, f"grpc://{server.address}?{urlencode({'token_file': str(token_file.resolve())})}"


def bound_url(server: uvicorn.Server) -> str:
    """The URL uvicorn actually listens on (the port may have been 0)."""
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    scheme = "https" if server.config.ssl_certfile else "http"
    return f"{scheme}://{host}:{port}"


def announce_console(url: str) -> None:
    """The console's URL, once the gateway listens (its port may have been 0)."""
    print(f"console (sign in with an API key): {url}/console/", flush=True)


async def _when_started(server: uvicorn.Server, then: AfterStart | None, admin_key: str) -> None:
    """Once uvicorn listens: announce the console, then run ``then`` in a thread (its failure is
    logged, the gateway keeps serving)."""
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(0.1)
    announce_console(bound_url(server))
    if then is not None:
        await asyncio.to_thread(_run_then, then, bound_url(server), admin_key)


def _run_then(then: AfterStart, url: str, admin_key: str) -> None:
    try:
        then(url, admin_key)
    except Exception as error:
        log.error(
            "%s failed: %s: %s", getattr(then, "__name__", "start-up work"), type(error).__name__, error
        )


def _serve_workers(
    settings: GatewaySettings, count: int, admin_key: str, then: AfterStart | None, *, own_lock: bool
) -> None:
    """``count`` gateway processes on the same ports (``gateway.workers``); ``then`` runs here."""
    lock = lock_path(settings.data_dir, settings.backends)

    def on_ready(url: str) -> None:
        announce_console(url)
        if then is not None:
            threading.Thread(target=_run_then, args=(then, url, admin_key), daemon=True).start()

    try:
        run_workers(settings, count, lock, on_ready)
    finally:
        if own_lock:  # named after this run's own inference server: no other process uses it
            lock.unlink(missing_ok=True)
    log.info("gateway stopped")


def uvicorn_config(settings: GatewaySettings, app: GatewayApp) -> uvicorn.Config:
    """How a gateway process runs ``app`` under uvicorn (alone, or as one of several workers)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level="info",
        access_log=False,
        # Nothing in the gateway reads the client's address or scheme (limits are per API key),
        # so uvicorn's X-Forwarded-* rewriting would be work for nothing on every request.
        proxy_headers=False,
        server_header=False,  # no "server: uvicorn" on every answer: it tells clients nothing useful
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
    )


async def _serve(settings: GatewaySettings, admin_key: str, then: AfterStart | None) -> None:
    server = uvicorn.Server(uvicorn_config(settings, create_app(settings)))
    tasks = [asyncio.create_task(server.serve()), asyncio.create_task(_when_started(server, then, admin_key))]
    await asyncio.gather(*tasks)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def check_port_free(host: str, port: int, flag: str) -> None:
    """Refuse a busy port before anything is made (an admin key, a local inference server)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise InvalidInput(
                f"cannot listen on {host}:{port} ({error.strerror}); stop what uses it or pick "
                f"another with {flag}"
            ) from None


def serve(settings: GatewaySettings, *, then: AfterStart | None = None) -> None:
    """Run until interrupted; ``then(base_url, admin_key)`` runs once the gateway listens."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workers = worker_count(settings.workers)
    check_shared_limits(settings, workers)
    check_port_free(settings.host, settings.port, "--port (or MDEPLOY_PORT)")
    if settings.grpc_port:
        check_port_free(
            settings.host, settings.grpc_port, "--grpc-port (or MDEPLOY_GRPC_PORT; 0 turns it off)"
        )
    admin = ensure_admin_key(settings)
    if admin.created:
        print(
            f"admin API key (shown once; saved to {settings.data_dir / ADMIN_KEY_FILE}):\n{admin.value}",
            flush=True,
        )
    # uvicorn re-raises SIGTERM after its shutdown; with Python's default disposition the
    # process would die there, before the local inference server is stopped below.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    local = None
    if not settings.backends:
        local, backend = start_local_server(settings)
        settings = settings.model_copy(update={"backends": [backend]})
        print(f"inference server listening on {local.address} (closed by {SERVER_TOKEN_FILE})", flush=True)
    if settings.grpc_port:
        print(f"gRPC API (KServe v2, tritonclient.grpc) on {settings.host}:{settings.grpc_port}", flush=True)
    try:
        if workers > 1:
            _serve_workers(settings, workers, admin.value, then, own_lock=local is not None)
            return
        # uvicorn's loop="uvloop" applies only when uvicorn makes the loop; this process makes it.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(settings, admin.value, then))
    except KeyboardInterrupt:
        # uvicorn re-raises Ctrl-C once it has shut down cleanly: that is how serving ends.
        log.info("gateway stopped")
    finally:
        if local is not None:
            local.stop()
