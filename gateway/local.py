"""``mdeploy serve``: the gateway and a local inference server on one machine, embedded defaults.

Creates the data folder; on first run makes an admin API key (printed once, saved as
``<data-dir>/admin-key`` with mode 0600); starts ``mdeploy-server`` as a child process
unless backends are given; serves the gateway under uvicorn (uvloop + httptools); with
``demo``, builds the example packages and pushes them through the gateway's own API.
SIGINT/SIGTERM stop the gateway, then drain and stop the inference server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
import uvloop

from gateway.app import create_app
from gateway.auth.keys import KeyStore
from gateway.auth.scopes import Scope
from gateway.db import open_database
from gateway.settings import GatewaySettings
from servers.process import ServerProcess, start_server_process

log = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin-key"


@dataclass(frozen=True)
class AdminKey:
    value: str
    created: bool


def ensure_admin_key(settings: GatewaySettings) -> AdminKey:
    """The admin key of this data folder, made on first run (all scopes; stored hashed in the database)."""
    path = settings.data_dir / ADMIN_KEY_FILE
    if path.exists():
        return AdminKey(path.read_text().strip(), created=False)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    connection = open_database(settings.database_path)
    try:
        created = KeyStore(connection).create(scopes=list(Scope), name="admin (mdeploy serve)")
    finally:
        connection.close()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(created.key + "\n")
    return AdminKey(created.key, created=True)


def start_local_server(settings: GatewaySettings) -> ServerProcess:
    work_dir = settings.data_dir / "server"
    return start_server_process(
        ["--grpc-port", "0", "--model-control-mode", "explicit", "--work-dir", str(work_dir)]
    )


def push_demo_packages(base_url: str, admin_key: str, data_dir: Path) -> list[str]:
    """Build the digits demo packages and push them through the gateway; the pushed model names."""
    from examples.digits import build_demo_packages

    names = []
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=300
    ) as client:
        for package in build_demo_packages(data_dir / "demo"):
            response = client.post(
                "/v1/admin/packages",
                content=package.read_bytes(),
                headers={"content-type": "application/octet-stream"},
            )
            response.raise_for_status()
            names.append(str(response.json()["name"]))
    return names


def curl_example(base_url: str, data_dir: Path, model: str) -> str:
    from examples.digits import load_data

    row = [int(v) for v in load_data().x_test[0]]
    body = '{"instances": [' + str(row).replace(" ", "") + "]}"
    return (
        f'curl -s -H "Authorization: Bearer $(cat {data_dir / ADMIN_KEY_FILE})" '
        f"-d '{body}' '{base_url}/v1/models/{model}:predict?labels=true'"
    )


def bound_url(server: uvicorn.Server) -> str:
    """The URL uvicorn actually listens on (the port may have been 0)."""
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    return f"http://{host}:{port}"


async def _demo(server: uvicorn.Server, admin_key: str, data_dir: Path) -> None:
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(0.1)
    base_url = bound_url(server)
    print("building and pushing the demo models (digits: scikit-learn and Keras)...", flush=True)
    try:
        names = await asyncio.to_thread(push_demo_packages, base_url, admin_key, data_dir)
    except Exception as error:  # the gateway keeps serving; say what went wrong in one line
        log.error("the demo models could not be pushed: %s: %s", type(error).__name__, error)
        return
    print(f"pushed {', '.join(names)}; try:\n\n  {curl_example(base_url, data_dir, names[0])}\n", flush=True)


async def _serve(settings: GatewaySettings, admin_key: str, demo: bool) -> None:
    config = uvicorn.Config(
        create_app(settings),
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
    )
    server = uvicorn.Server(config)
    tasks = [asyncio.create_task(server.serve())]
    if demo:
        tasks.append(asyncio.create_task(_demo(server, admin_key, settings.data_dir)))
    await asyncio.gather(*tasks)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(settings: GatewaySettings, *, demo: bool = False) -> None:
    """Run until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    admin = ensure_admin_key(settings)
    if admin.created:
        print(
            f"admin API key (shown once; saved to {settings.data_dir / ADMIN_KEY_FILE}):\n{admin.value}",
            flush=True,
        )
    # uvicorn re-raises SIGTERM after its shutdown; with Python's default disposition the
    # process would die there, before the local inference server is stopped below.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    local = None if settings.backends else start_local_server(settings)
    if local is not None:
        settings = settings.model_copy(update={"backends": [local.address]})
        print(f"inference server listening on {local.address}", flush=True)
    try:
        # uvicorn's loop="uvloop" applies only when uvicorn makes the loop; this process makes it.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(settings, admin.value, demo))
    finally:
        if local is not None:
            local.stop()
