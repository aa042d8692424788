"""The registry's side of the backends: what it asks of an inference server, the reconcile plan,
and the Deployer that loads a push everywhere and puts things back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc

from core.errors import DeadlineExceeded, MdeployError, ModelLoadError, Unavailable
from gateway.backends import Backend, BackendPool, map_rpc_error
from gateway.registry import tables
from gateway.registry.durable_state import RegistryStorage
from gateway.registry.served import LiveVersion
from gateway.registry.tables import State
from gateway.registry.triton_config import model_config, wire_config_json
from protos.generated import inference_pb2 as pb

# ---- the repository RPCs ----
# What the registry asks of an inference server, over the v2 repository extension.
#
# A load replaces the model's whole version set with the versions it carries (Triton's rule),
# so every call sends the configuration and the files of every version that should be served.


LOAD_TIMEOUT_S = 300.0
"""A load builds an onnxruntime session per version: far slower than a prediction."""
INDEX_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Desired:
    """What a backend should serve of one model: versions, their config and their files."""

    model: str
    versions: tuple[int, ...]
    config_json: str
    files: dict[str, bytes]


async def load_on(backend: Backend, desired: Desired) -> None:
    request = pb.RepositoryModelLoadRequest(model_name=desired.model)
    request.parameters["config"].string_param = desired.config_json
    for relative, data in desired.files.items():
        request.parameters[f"file:{relative}"].bytes_param = data
    try:
        await backend.stub.RepositoryModelLoad(request, timeout=LOAD_TIMEOUT_S, metadata=backend.metadata)
    except grpc.aio.AioRpcError as error:
        backend.inventory_stale = True  # a load that failed half way may have changed what it serves
        raise _load_error(error, backend, desired) from None
    # The data plane sends it requests for these versions from now on, without waiting for an index.
    backend.note_loaded(desired.model, [str(version) for version in desired.versions])


async def unload_from(backend: Backend, model: str) -> None:
    request = pb.RepositoryModelUnloadRequest(model_name=model)
    try:
        await backend.stub.RepositoryModelUnload(request, timeout=LOAD_TIMEOUT_S, metadata=backend.metadata)
    except grpc.aio.AioRpcError as error:
        backend.inventory_stale = True
        raise map_rpc_error(error, backend.address) from None
    backend.note_unloaded(model)


async def inventory_of(backend: Backend) -> dict[str, set[int]]:
    """The versions ``backend`` serves now (READY), by model (the data plane's inventory too)."""
    served = await backend.read_inventory(INDEX_TIMEOUT_S)
    numbered = {model: {int(v) for v in versions if v.isdigit()} for model, versions in served.items()}
    return {model: versions for model, versions in numbered.items() if versions}


def _load_error(error: grpc.aio.AioRpcError, backend: Backend, desired: Desired) -> MdeployError:
    mapped = map_rpc_error(error, backend.address)
    if isinstance(mapped, Unavailable | DeadlineExceeded):
        return mapped
    versions = ", ".join(str(v) for v in desired.versions)
    return ModelLoadError(
        f"inference server {backend.address} refused to load model '{desired.model}' "
        f"version(s) {versions}: {mapped.message}"
    )


# ---- the reconcile plan ----
# Reconcile planning: what to tell one backend so that it serves exactly the live versions.
#
# Pure: the registry gathers the facts (live and pending versions, what the backend serves)
# and carries out the plan. Only models the registry manages are touched; a backend may serve
# other models of its own.


Versions = Mapping[str, set[int]]


@dataclass(frozen=True)
class Load:
    model: str
    versions: tuple[int, ...]


@dataclass(frozen=True)
class Unload:
    model: str


Action = Load | Unload


def plan(managed: Iterable[str], live: Versions, pending: Versions, served: Versions) -> list[Action]:
    """The loads and unloads that bring ``served`` to ``live``.

    A version another gateway process is pushing right now (pending) may stay: that push
    loaded it a moment ago and is about to make it live.
    """
    actions: list[Action] = []
    for model in sorted(set(managed)):
        want = live.get(model, set())
        have = served.get(model, set())
        if want <= have <= want | pending.get(model, set()):
            continue
        actions.append(Load(model, tuple(sorted(want))) if want else Unload(model))
    return actions


# ---- the deployer ----
# The registry's side of the backends: load a push everywhere, put things back, reconcile.
#
# Holds no lock of its own: the registry calls it under its lock, so what it reads from the
# database stays true while it talks to the backends.


log = logging.getLogger(__name__)


@dataclass
class Deployer:
    pool: BackendPool
    storage: RegistryStorage

    async def roll_out(self, model: str, items: list[LiveVersion]) -> None:
        """Load ``items`` on every healthy backend; if one refuses, put the previous set back.

        A backend found unreachable meanwhile is marked down rather than failing the push: the
        others serve the version, and the reconcile loop loads it there once it is back.
        """
        backends = self.pool.healthy()
        if not backends:
            raise Unavailable(
                f"no inference server is available to load model '{model}', so nothing was registered; "
                "push again when one is up"
            )
        desired = await self.desired(model, items)
        results = await asyncio.gather(*(load_on(b, desired) for b in backends), return_exceptions=True)
        outcomes = list(zip(backends, results, strict=True))
        for backend, result in outcomes:
            if isinstance(result, Unavailable):
                self.pool.mark_down(backend, result.message)
        failures = [result for _, result in outcomes if isinstance(result, BaseException)]
        refusals = [failure for failure in failures if not isinstance(failure, Unavailable)]
        if refusals or len(failures) == len(backends):
            await self.apply_live(model, [backend for backend, result in outcomes if result is None])
            raise _unregistered((refusals or failures)[0])

    async def apply_live(self, model: str, backends: list[Backend]) -> None:
        """Best effort: ``backends`` serve the live versions of ``model`` (reconcile retries)."""
        live = await self.storage.live(model)
        for backend in backends:
            try:
                if live:
                    await load_on(backend, await self.desired(model, live))
                else:
                    await unload_from(backend, model)
            except MdeployError as error:
                log.warning("%s keeps an outdated model %s: %s", backend.address, model, error.message)

    async def reconcile(self, backend: Backend) -> None:
        """Make ``backend`` serve exactly the live versions of the models the registry manages."""
        try:
            served = await inventory_of(backend)
            live = await self.storage.versions_by_model(State.LIVE)
            pending = await self.storage.versions_by_model(State.PENDING)
            managed = await self.storage.database.read(tables.model_names)
            for action in plan(managed, live, pending, served):
                await self._carry_out(backend, action)
        except MdeployError as error:
            log.warning("reconcile of inference server %s failed: %s", backend.address, error.message)
            if isinstance(error, Unavailable):
                self.pool.mark_down(backend, error.message)

    async def _carry_out(self, backend: Backend, action: Action) -> None:
        if isinstance(action, Load):
            await load_on(backend, await self.desired(action.model, await self.storage.live(action.model)))
            log.info(
                "reconcile: %s serves model %s versions %s", backend.address, action.model, action.versions
            )
        else:
            await unload_from(backend, action.model)
            log.info("reconcile: %s no longer serves model %s", backend.address, action.model)

    async def desired(self, model: str, items: list[LiveVersion]) -> Desired:
        """The load that serves ``items``: one config (the newest manifest's), every version's files."""
        newest = max(items, key=lambda item: item.version).manifest
        versions = sorted(item.version for item in items)
        config = model_config(model, newest, versions)
        await self.storage.lay_out(items)  # versions pushed through another host, on first use here
        files = await asyncio.to_thread(self.storage.repository.load_files, model, versions)
        return Desired(model, tuple(versions), wire_config_json(config), files)


def _unregistered(error: BaseException) -> BaseException:
    """The same error, saying that the push left nothing behind."""
    if not isinstance(error, MdeployError):
        return error
    failure = type(error)(f"{error.message}; nothing was registered")
    failure.__cause__ = error
    return failure
