"""The registry's side of the backends: load a push everywhere, put things back, reconcile.

Holds no lock of its own: the registry calls it under its lock, so what it reads from the
database stays true while it talks to the backends.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from core.errors import MdeployError, Unavailable
from gateway.backends import Backend, BackendPool
from gateway.registry import deploy
from gateway.registry.reconcile import Action, Load, plan
from gateway.registry.served import LiveVersion
from gateway.registry.storage import RegistryStorage
from gateway.registry.tables import State
from gateway.registry.triton_config import model_config, wire_config_json

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
        results = await asyncio.gather(*(deploy.load(b, desired) for b in backends), return_exceptions=True)
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
        live = self.storage.live(model)
        for backend in backends:
            try:
                if live:
                    await deploy.load(backend, await self.desired(model, live))
                else:
                    await deploy.unload(backend, model)
            except MdeployError as error:
                log.warning("%s keeps an outdated model %s: %s", backend.address, model, error.message)

    async def reconcile(self, backend: Backend) -> None:
        """Make ``backend`` serve exactly the live versions of the models the registry manages."""
        try:
            served = await deploy.inventory(backend)
            live = self.storage.versions_by_model(State.LIVE)
            pending = self.storage.versions_by_model(State.PENDING)
            for action in plan(self.storage.tables.model_names(), live, pending, served):
                await self._carry_out(backend, action)
        except MdeployError as error:
            log.warning("reconcile of inference server %s failed: %s", backend.address, error.message)
            if isinstance(error, Unavailable):
                self.pool.mark_down(backend, error.message)

    async def _carry_out(self, backend: Backend, action: Action) -> None:
        if isinstance(action, Load):
            await deploy.load(backend, await self.desired(action.model, self.storage.live(action.model)))
            log.info(
                "reconcile: %s serves model %s versions %s", backend.address, action.model, action.versions
            )
        else:
            await deploy.unload(backend, action.model)
            log.info("reconcile: %s no longer serves model %s", backend.address, action.model)

    async def desired(self, model: str, items: list[LiveVersion]) -> deploy.Desired:
        """The load that serves ``items``: one config (the newest manifest's), every version's files."""
        newest = max(items, key=lambda item: item.version).manifest
        versions = sorted(item.version for item in items)
        config = model_config(model, newest, versions)
        files = await asyncio.to_thread(self.storage.repository.load_files, model, versions)
        return deploy.Desired(model, tuple(versions), wire_config_json(config), files)


def _unregistered(error: BaseException) -> BaseException:
    """The same error, saying that the push left nothing behind."""
    if not isinstance(error, MdeployError):
        return error
    failure = type(error)(f"{error.message}; nothing was registered")
    failure.__cause__ = error
    return failure
