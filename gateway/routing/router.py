"""The router: which version answers a request without one, and what follows from the answer.

* ``route`` applies the model's deployment policy (none: the highest live version) and counts
  a pull for bandits. A request that names a version bypasses it.
* ``observe`` feeds the guard; when a candidate crosses a threshold the router rolls the
  deployment back to its stable version by itself and says why (audit log, metrics, logs).
* ``feedback`` turns a reward for a request id into bandit statistics, once.
* ``rollout``, ``rollback`` and ``promote`` change the deployment: written with its audit event
  first, then swapped in as one immutable object, so a request sees the old policy or the new
  one, never a mixture. Other gateway processes pick the change up within ``refresh_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import Conflict, InvalidInput, NotFound, Unavailable
from gateway.catalog import ModelCatalog
from gateway.routing.deployment_status import ArmStatus, DeploymentStatus, GuardStatus
from gateway.routing.deployments import Change, Deployment, DeploymentStore
from gateway.routing.guard import GuardSpec, GuardWindows
from gateway.routing.ledger import Ledger
from gateway.routing.policies import BANDITS, ArmStats, Choice, PolicySpec, choose
from gateway.routing.stats import StatsStore

log = logging.getLogger(__name__)

AUTOMATIC = "gateway (guard)"

RollbackListener = Callable[[str, str], None]  # model, manual|automatic
RouteListener = Callable[[str, str], None]  # model, version chosen by the policy


@dataclass(slots=True)  # per request: a frozen dataclass costs ~4x to build
class Routed:
    """The version chosen for one request, and the copy a shadow candidate gets."""

    version: str
    shadow: str | None = None
    by_policy: bool = False


class Router:
    def __init__(
        self,
        store: DeploymentStore,
        catalog: ModelCatalog,
        stats: StatsStore,
        ledger: Ledger,
        *,
        refresh_s: float = 1.0,
        seed: int | None = None,
        on_rollback: RollbackListener | None = None,
        on_route: RouteListener | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self.stats = stats
        self.ledger = ledger
        self._refresh_s = refresh_s
        self._rng = random.Random(seed)
        self._deployments: dict[str, Deployment] = store.all()
        self._decisions: dict[str, int] = defaultdict(int)
        self._routed: dict[str, dict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )  # since the last change
        self._guard_events: dict[str, str] = {}  # model: the last automatic rollback, for status
        self._guards: dict[str, GuardWindows] = {}
        self._refresh_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._on_rollback = on_rollback or (lambda model, kind: None)
        self._on_route = on_route or (lambda model, version: None)
        self._stats_down_logged = 0.0

    async def start(self) -> None:
        self.stats.start()
        self.ledger.start()
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="deployments-refresh")

    async def close(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh_task
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def deployment(self, model: str) -> Deployment | None:
        return self._deployments.get(model)

    # ---- the request path ----

    def deploys(self, model: str) -> bool:
        """Whether a deployment policy routes ``model``'s requests that name no version."""
        return model in self._deployments

    async def route(self, model: str, routing_key: str | None) -> Routed | None:
        """The version for a request that names none; None without a deployment (the default serves)."""
        deployment = self._deployments.get(model)
        if deployment is None:
            return None
        spec = deployment.spec
        bandit = spec.kind in BANDITS
        stats: dict[str, ArmStats] = {}
        if bandit:
            try:
                stats = await self.stats.snapshot(model)
            except Exception as error:
                # Statistics out of reach (Redis down): keep serving from the stable version.
                self._stats_down(error)
                return Routed(deployment.stable, by_policy=False)
        choice: Choice = choose(spec, stats, self._rng, routing_key, self._decisions[model])
        self._decisions[model] += 1
        self._routed[model][choice.version] += 1
        if bandit:
            try:
                await self.stats.add_pull(model, choice.version)
            except Exception as error:
                self._stats_down(error)
        self._on_route(model, choice.version)
        return Routed(choice.version, choice.shadow, by_policy=True)

    def _stats_down(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._stats_down_logged > 10.0:
            self._stats_down_logged = now
            log.warning("bandit statistics are out of reach (%s); routing to stable versions", error)

    async def remember(self, request_id: str, model: str, version: str) -> None:
        """Note which version answered ``request_id`` so feedback can reach it."""
        await self.ledger.remember(request_id, model, version)

    def observe(self, model: str, version: str, ok: bool, latency_s: float, *, routed: bool = True) -> None:
        """Hear how a request to ``version`` went: it feeds the guard (and automatic rewards)."""
        deployment = self._deployments.get(model)
        if deployment is None:
            return
        objective = deployment.spec.auto_reward_latency_ms
        if routed and objective is not None and deployment.spec.kind in BANDITS:
            reward = 1.0 if ok and latency_s * 1000.0 <= objective else 0.0
            self._in_background(self.stats.add_reward(model, version, reward))
        if not deployment.candidates:
            return
        windows = self._guards.get(model)
        if windows is None:
            windows = self._guards[model] = GuardWindows(deployment.guard.window)
        windows.record(version, ok, latency_s)
        for candidate in deployment.candidates:
            verdict = windows.verdict(deployment.stable, candidate, deployment.guard)
            if verdict is not None:
                self._roll_back_later(deployment, candidate, verdict.reason)
                return

    async def feedback(self, model: str, request_id: str, reward: float) -> str:
        """Count ``reward`` for the version that answered ``request_id``; that version."""
        if not 0.0 <= reward <= 1.0:
            raise InvalidInput(f"reward must be between 0 and 1, not {reward}")
        try:
            entry = await self.ledger.claim(request_id, model)
            await self.stats.add_reward(model, entry.version, reward)
        except (NotFound, Conflict):
            raise
        except Exception as error:
            raise Unavailable(f"feedback cannot be recorded now ({error}); retry later") from None
        return entry.version

    # ---- changing the deployment ----

    async def rollout(
        self, model: str, spec: PolicySpec, guard: GuardSpec, actor: str, reason: str
    ) -> Deployment:
        spec.check()
        live = {v.version for v in self._catalog.served_versions(model)}
        missing = sorted(set(spec.versions) - live)
        if missing:
            raise NotFound(
                f"model '{model}' has no live version {missing[0]} (live: {', '.join(sorted(live))})"
            )
        current = self._store.get(model)
        stable = current.stable if current is not None else self._catalog.resolve(model, None).version
        if stable not in spec.versions and spec.kind != "pinned":
            stable = spec.versions[0]
        if spec.kind == "pinned":
            stable = spec.versions[0]
        # Another bandit or other arms learn afresh; the same bandit retuned keeps what it learned.
        retuned = current is not None and (current.spec.kind, current.spec.versions) == (
            spec.kind,
            spec.versions,
        )
        if spec.kind in BANDITS and not retuned:
            await self.stats.reset(model, spec.versions)
        new = Deployment(model, spec, guard, stable, 0)
        return self._apply(new, current, Change(actor, "rollout", reason))

    async def rollback(self, model: str, to: str | None, actor: str, reason: str) -> Deployment:
        current = self._store.get(model)
        if current is None:
            self._catalog.served_versions(model)  # an unknown model is a 404 that says so
        target = to or (current.stable if current is not None else None)
        if target is None:
            raise InvalidInput(f"model '{model}' has no deployment to roll back; name a version with --to")
        self._catalog.resolve(model, target)
        guard = current.guard if current is not None else GuardSpec()
        new = Deployment(model, PolicySpec(kind="pinned", versions=[target]), guard, target, 0)
        saved = self._apply(new, current, Change(actor, "rollback", reason))
        self._on_rollback(model, "manual")
        return saved

    async def promote(self, model: str, version: str, actor: str, reason: str) -> Deployment:
        self._catalog.resolve(model, version)
        current = self._store.get(model)
        guard = current.guard if current is not None else GuardSpec()
        new = Deployment(model, PolicySpec(kind="pinned", versions=[version]), guard, version, 0)
        return self._apply(new, current, Change(actor, "promote", reason))

    def _apply(self, new: Deployment, current: Deployment | None, change: Change) -> Deployment:
        saved = self._store.save(new, current.generation if current is not None else None, change)
        self._deployments = {**self._deployments, saved.model: saved}  # one swap: old or new, never both
        self._forget_window(saved.model)
        log.info(
            "deployment of %s: %s (%s by %s)", saved.model, saved.describe(), change.action, change.actor
        )
        return saved

    def _roll_back_later(self, deployment: Deployment, candidate: str, reason: str) -> None:
        # Route away at once in this process; the write (and other processes) follow.
        pinned = Deployment(
            deployment.model,
            PolicySpec(kind="pinned", versions=[deployment.stable]),
            deployment.guard,
            deployment.stable,
            deployment.generation,
        )
        self._deployments = {**self._deployments, deployment.model: pinned}
        self._forget_window(deployment.model)
        why = f"guard: version {candidate} {reason}"
        self._guard_events[deployment.model] = (
            f"rolled back version {candidate} at {time.strftime('%H:%M:%S')}: {reason}"
        )
        log.warning("automatic rollback of %s to version %s: %s", deployment.model, deployment.stable, why)
        self._on_rollback(deployment.model, "automatic")
        self._in_background(self._write_rollback(deployment, pinned, why))

    def _in_background(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("routing bookkeeping failed: %s", task.exception())

    async def _write_rollback(self, old: Deployment, pinned: Deployment, why: str) -> None:
        try:
            saved = self._store.save(pinned, old.generation, Change(AUTOMATIC, "auto-rollback", why))
        except Conflict:
            # Another gateway process changed it first (maybe the same rollback): refresh adopts theirs.
            log.info("the deployment of %s changed elsewhere before this rollback was written", old.model)
            return
        except Exception:
            log.exception("could not record the automatic rollback of %s", old.model)
            return
        if self._deployments.get(old.model) is pinned:
            self._deployments = {**self._deployments, old.model: saved}

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                stored = self._store.all()
            except Exception:
                log.exception("could not read deployments")
                continue
            for model, deployment in stored.items():
                mine = self._deployments.get(model)
                if mine is None or deployment.generation > mine.generation:
                    self._deployments = {**self._deployments, model: deployment}
                    self._forget_window(model)

    def _forget_window(self, model: str) -> None:
        """A new deployment is judged on its own requests."""
        self._guards.pop(model, None)
        self._decisions[model] = 0
        self._routed.pop(model, None)

    def check_unused(self, model: str, version: str) -> None:
        """Refuse to let a version that the deployment routes to disappear under it."""
        deployment = self._deployments.get(model)
        if deployment is not None and (version in deployment.spec.arms or version == deployment.stable):
            raise Conflict(
                f"model '{model}' version {version} is in its deployment ({deployment.describe()}, stable "
                f"{deployment.stable}); roll out or roll back without it before deleting it"
            )

    # ---- seeing it ----

    def traffic_shares(self) -> dict[tuple[str, str], float]:
        """(model, version): its share of the requests this process routed since the last change."""
        shares = {}
        for model, counts in list(self._routed.items()):
            total = sum(counts.values())
            shares.update({(model, version): n / total for version, n in counts.items() if total})
        return shares

    def _guard_state(self, deployment: Deployment) -> str:
        if not deployment.guard.enabled:
            return "off"
        return (
            f"watching {', '.join(deployment.candidates)}" if deployment.candidates else "idle (no candidate)"
        )

    async def status(self, model: str) -> DeploymentStatus:
        deployment = self._deployments.get(model)
        live = [v.version for v in self._catalog.served_versions(model)]
        if deployment is None:
            default = self._catalog.resolve(model, None).version
            return DeploymentStatus(model=model, policy=None, stable=default, arms=[], live_versions=live)
        try:
            stats = await self.stats.snapshot(model)
        except Exception as error:
            raise Unavailable(f"bandit statistics are out of reach ({error}); retry later") from None
        windows = self._guards.get(model)
        bandit = deployment.spec.kind in BANDITS
        # Bandits: pulls, counted by every gateway process. Others: this process's decisions.
        shares = {v: a.pulls for v, a in stats.items()} if bandit else dict(self._routed.get(model, {}))
        total = sum(shares.get(v, 0) for v in deployment.spec.versions)
        arms = []
        for version in dict.fromkeys([*deployment.spec.versions, *deployment.candidates]):
            arm = stats.get(version)
            low, high = arm.ci95() if arm is not None else (0.0, 0.0)
            outcome = windows.summary(version) if windows is not None else None
            arms.append(
                ArmStatus(
                    version=version,
                    stable=version == deployment.stable,
                    pulls=arm.pulls if arm else 0,
                    traffic_share=shares.get(version, 0) / total
                    if total and version in deployment.spec.versions
                    else None,
                    weight=(deployment.spec.weights or {}).get(version),
                    rewards=arm.rewards if arm else 0,
                    mean_reward=arm.mean if arm else None,
                    reward_ci95=[low, high] if arm and arm.rewards else None,
                    requests=outcome.requests if outcome else 0,
                    error_rate=outcome.error_rate if outcome else None,
                    p50_ms=outcome.p50_ms if outcome else None,
                    p99_ms=outcome.p99_ms if outcome else None,
                )
            )
        guard = GuardStatus(
            **dict(deployment.guard),
            state=self._guard_state(deployment),
            last_rollback=self._guard_events.get(model),
        )
        return DeploymentStatus(
            model=model,
            policy=deployment.spec,
            guard=guard,
            stable=deployment.stable,
            generation=deployment.generation,
            arms=arms,
            live_versions=live,
            checked_at=time.time(),
        )
