"""Helpers of the registry tests: a registry on real inference servers, package variants, waiting."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa
import tritonclient.grpc as triton

from core.server_process import ServerProcess, start_server_process
from gateway.auth.keys import with_keys
from gateway.backends import BackendPool
from gateway.database.engine import Database, open_gateway_database
from gateway.db import open_database
from gateway.leadership import Leadership
from gateway.process import GatewayProcess, start_gateway_process
from gateway.registry.records import PushPhase, PushResult
from gateway.registry.service import Registry
from gateway.registry.stores import package_store, session_liveness
from gateway.settings import GatewaySettings
from modelpkg import read_package
from tests.modelpkg.zips import entries, zipped

FAST = {"reconcile_interval_s": 0.2, "health_interval_s": 0.1, "grpc_port": 0}
"""Short intervals: tests wait on conditions, and these make the conditions come true quickly."""


@dataclass
class Rig:
    """A registry with its database and backend pool, as the gateway wires them."""

    settings: GatewaySettings
    database: Database
    pool: BackendPool
    registry: Registry

    async def push(
        self, package: Path, actor: str = "key:tester", observe: Callable[[PushPhase], None] | None = None
    ) -> PushResult:
        """Push a copy of ``package`` (the registry consumes its upload file)."""
        upload = self.registry.new_upload_path()
        shutil.copyfile(package, upload)
        if observe is None:
            return await self.registry.push(upload, actor)
        return await self.registry.push(upload, actor, observe=observe)

    async def count(self, table: str) -> int:
        def count(connection: sa.Connection) -> int:
            return int(connection.scalar(sa.select(sa.func.count()).select_from(sa.table(table))) or 0)

        return await self.database.read(count)

    async def stored_packages(self) -> set[str]:
        return await self.registry.storage.store.digests()


@dataclass
class Appointed:
    """A leadership the test decides (``gateway.leadership.Leadership``)."""

    is_leader: bool

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def settings_for(data_dir: Path, backends: list[str], **overrides: Any) -> GatewaySettings:
    return GatewaySettings(data_dir=data_dir, backends=backends, **{**FAST, **overrides})


@asynccontextmanager
async def opened_database(data_dir: Path) -> AsyncIterator[tuple[Database, GatewaySettings]]:
    """The database a gateway on ``data_dir`` opens (MDEPLOY_DATABASE_URL's, if set), and its settings."""
    settings = GatewaySettings(data_dir=data_dir)
    database = await open_gateway_database(
        settings.database_url, lambda: open_database(settings.database_path)
    )
    try:
        yield database, settings
    finally:
        await database.close()


@asynccontextmanager
async def running_registry(
    data_dir: Path, backends: list[str], leadership: Leadership | None = None, **overrides: Any
) -> AsyncIterator[Rig]:
    """Registry.open, pool.start, registry.start, and the reverse: the gateway's lifespan, minus HTTP."""
    settings = settings_for(data_dir, backends, **overrides)
    database = await open_gateway_database(
        settings.database_url, lambda: open_database(settings.database_path)
    )
    pool = BackendPool(
        settings.backends, settings.backend_timeout_s, settings.health_interval_s, tls=settings.backend_tls
    )
    try:
        registry = await Registry.open(
            settings,
            database,
            pool,
            store=package_store(settings, database),
            liveness=session_liveness(settings, database),
        )
        await pool.start()
        await registry.start(leadership)
        try:
            yield Rig(settings, database, pool, registry)
        finally:
            await registry.close()
            await pool.close()
    finally:
        await database.close()


def variant(package: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``package`` whose manifest ``edit`` changed: another valid package, another digest.

    The manifest lists the hashes of the other entries, not its own, so only it changes.
    """
    files = entries(package)
    manifest = json.loads(files["MANIFEST.json"])
    edit(manifest)
    files["MANIFEST.json"] = json.dumps(manifest, sort_keys=True).encode()
    target.write_bytes(zipped(files))
    return target


def described(package: Path, target: Path, description: str, version: str | None = None) -> Path:
    def edit(manifest: dict[str, Any]) -> None:
        manifest["description"] = description
        if version is not None:
            manifest["version"] = version

    return variant(package, target, edit)


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def served_versions(address: str, model: str) -> set[str]:
    """The versions of ``model`` the server at ``address`` reports READY (tritonclient)."""
    with triton.InferenceServerClient(address) as client:
        index = client.get_model_repository_index(as_json=True)
    return {
        entry["version"]
        for entry in index.get("models", [])
        if entry["name"] == model and entry.get("state") == "READY"
    }


def infer_samples(address: str, model: str, version: str, package: Path) -> dict[str, np.ndarray]:
    """Run the package's sample inputs through ``address`` with tritonclient; the outputs."""
    samples = read_package(package).samples
    inputs = []
    for name, array in samples.inputs.items():
        tensor = triton.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    with triton.InferenceServerClient(address) as client:
        result = client.infer(model, inputs, model_version=version)
    return {name: result.as_numpy(name) for name in samples.outputs}


def expected_outputs(package: Path) -> dict[str, np.ndarray]:
    return dict(read_package(package).samples.outputs)


def same_bytes(first: Path, second: Path) -> bool:
    return first.read_bytes() == second.read_bytes()


@dataclass
class LiveGatewayRig:
    """``mdeploy serve`` (uvicorn in a child process) in front of one real inference server."""

    server: ServerProcess
    gateway: GatewayProcess

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def data_dir(self) -> Path:
        return self.gateway.data_dir

    @property
    def admin_key(self) -> str:
        return self.gateway.admin_key

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def make_key(self, *scopes: str) -> str:
        """A key in the gateway's database (its data folder's, or MDEPLOY_DATABASE_URL's)."""
        settings = GatewaySettings(data_dir=self.data_dir)
        return with_keys(settings, lambda keys: keys.create(list(scopes), name="test")).key

    def leftover_uploads(self) -> list[Path]:
        """Files in the gateway's session folders (uploads in progress or left behind)."""
        return [p for p in (self.data_dir / "work").glob("*/*") if p.is_file()]


@contextmanager
def live_gateway_with_server(data_dir: Path, port: int, **environment: str) -> Iterator[LiveGatewayRig]:
    server = start_server_process(
        ["--grpc-port", "0", "--grpc-address", "127.0.0.1", "--model-control-mode", "explicit"]
    )
    try:
        gateway = start_gateway_process(data_dir, [server.address], port=port, env=environment)
        try:
            yield LiveGatewayRig(server, gateway)
        finally:
            gateway.stop(timeout_s=10)
    finally:
        server.stop(timeout_s=10)


def renamed(package: Path, target: Path, name: str) -> Path:
    """The package under another model name (a separate model for test isolation)."""

    def edit(manifest: dict[str, Any]) -> None:
        manifest["name"] = name

    return variant(package, target, edit)
