"""The router: which version answers a request without one, and what follows from the answer.

* ``route`` applies the model's deployment policy and counts a decision (a pull) for the arm
  it chose. A request that names a version bypasses it. Every served model has a deployment:
  its first version goes live (``adopt``), later ones are staged until a change names them.
* ``observe`` feeds the guard; when a candidate crosses a threshold the router rolls the
  deployment back to its stable version by itself and says why (audit log, metrics, logs).
* ``feedback`` turns a reward for a request id into bandit statistics, once.
* ``rollout``, ``promote``, ``rollback`` and ``repoint`` change the deployment: written with its
  audit event first, then swapped in as one immutable object, so a request sees the old policy
  or the new one, never a mixture. Other gateway processes pick the change up within
  ``refresh_s``. A change forward keeps the state it replaced, so ``rollback`` without a target
  undoes the last change still in effect; the guard's rollback undoes the rollout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import Conflict, InvalidInput, NotFound, Unavailable
from core.tasks import cancelled
from gateway.catalog import ModelCatalog, ServedVersion
from gateway.routing.comparison import reward_difference
from gateway.routing.deployment_status import ArmStatus, DeploymentStatus, GuardStatus
from gateway.routing.deployments import Change, Deployment, DeploymentStore, LiveState, pinned
from gateway.routing.guard import GuardSpec, GuardWindows
from gateway.routing.ledger import Ledger
from gateway.routing.policies import BANDITS, ArmStats, Choice, PolicySpec, choose
from gateway.routing.recent import RecentCounts
from gateway.routing.shadow import ShadowTally
from gateway.routing.stats import StatsStore
from gateway.serving import ArmShare, Role, Serving

log = logging.getLogger(__name__)

AUTOMATIC = "gateway (guard)"
ADOPTED = "gateway"

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
        self._deployments: dict[str, Deployment] = {}
        self._decisions: dict[str, int] = defaultdict(int)
        self._routed: dict[str, dict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )  # since the last change
        self._guard_events: dict[str, str] = {}  # model: the last automatic rollback, for status
        self._guards: dict[str, GuardWindows] = {}
        self._shadows: dict[str, ShadowTally] = {}  # model: its shadow candidate's comparisons
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_now = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._on_rollback = on_rollback or (lambda model, kind: None)
        self._on_route = on_route or (lambda model, version: None)
        self._stats_down_logged = 0.0
        self.recent = RecentCounts()

    async def start(self) -> None:
        """Every served model gets a deployment (see ``_deployment_of``); upkeep begins."""
        self._deployments = await self._store.all()
        for model in self._catalog.model_names():
            await self._deployment_of(model)
        self.stats.start()
        self.ledger.start()
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="deployments-refresh")

    async def close(self) -> None:
        await cancelled(self._refresh_task)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def deployment(self, model: str) -> Deployment | None:
        return self._deployments.get(model)

    # ---- the request path ----

    async def route(self, model: str, routing_key: str | None) -> Routed:
        """The version for a request that names none, by the model's deployment."""
        deployment = self._deployments.get(model) or await self._deployment_of(model)
        spec = deployment.spec
        if spec.kind == "pinned":  # most requests: no draw, no statistics to read
            version = spec.versions[0]
            self._routed[model][version] += 1
            self.recent.add(model, version)
            await self.stats.add_pull(model, version)  # counted in memory (BufferedStats)
            return Routed(version, by_policy=True)  # feedback can reward the live version too
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
        self.recent.add(model, choice.version)
        try:  # every arm's decisions, shared by the gateway processes: status shows them
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

    async def adopt(self, model: str, version: str, actor: str) -> Deployment:
        """A model's first version goes live: requests that name no version get it."""
        current = await self._store.get(model)
        if current is not None:
            return self._remember(current)
        change = Change(actor, "go-live", f"version {version} is the model's first")
        try:
            return await self._save(model, pinned(version), version, GuardSpec(), (), None, change)
        except Conflict:  # another gateway process adopted it first
            return self._remember(await self._store.get(model) or await self._deployment_of(model))

    async def rollout(
        self, model: str, spec: PolicySpec, guard: GuardSpec, actor: str, reason: str
    ) -> Deployment:
        """Route ``model`` by ``spec``; the stable version is the one live now (a pinned
        policy's version becomes live itself)."""
        spec.check()
        self._check_served(model, spec.arms)
        current = await self._deployment_of(model)
        stable = spec.versions[0] if spec.kind == "pinned" else current.stable
        change = Change(actor, "promote" if spec.kind == "pinned" else "rollout", reason)
        return await self._move(current, spec, stable, guard, change)

    async def promote(self, model: str, version: str, actor: str, reason: str) -> Deployment:
        """``version`` becomes live: all requests that name no version, and later rollouts' stable."""
        self._check_served(model, [version])
        current = await self._deployment_of(model)
        return await self._move(
            current, pinned(version), version, current.guard, Change(actor, "promote", reason)
        )

    async def rollback(self, model: str, to: str | None, actor: str, reason: str) -> Deployment:
        """Back to the live state before the last change (or ``to`` alone, itself undoable)."""
        current = await self._deployment_of(model)
        change = Change(actor, "rollback", reason)
        if to is not None:
            self._check_served(model, [to])
            return await self._move(current, pinned(to), to, current.guard, change)
        if not current.history:
            raise Conflict(
                f"model '{model}' has nothing to roll back: {current.describe()} has served since its "
                "first version went live; name a version with --to"
            )
        previous = current.history[-1]
        self._check_served(model, previous.spec.arms, f"cannot return to {previous.describe()}")
        saved = await self._change(
            current, previous.spec, previous.stable, current.guard, current.history[:-1], change
        )
        self._on_rollback(model, "manual")
        return saved

    async def repoint(self, model: str, gone: str, actor: str, reason: str) -> None:
        """``gone`` was deleted although the deployment used it: its newest remaining version
        goes live, or the deployment goes with the model's last version."""
        current = await self._deployment_of(model)
        if gone not in current.spec.arms and gone != current.stable:
            return
        remaining = [v.version for v in self._served_or_none(model) if v.version != gone]
        change = Change(actor, "repoint", reason, {"deleted": gone})
        if not remaining:
            await self._store.drop(model, current.generation, change)
            self._deployments = {m: d for m, d in self._deployments.items() if m != model}
            self._forget_window(model)
            return
        newest = max(remaining, key=int)
        await self._move(current, pinned(newest), newest, current.guard, change)

    async def role(self, model: str, version: str) -> str | None:
        """How the deployment uses ``version`` (``live``, ``stable``, ``candidate``, ``shadow``), or None."""
        deployment = self._deployments.get(model) or await self._store.get(model)
        if deployment is None:
            return None
        if deployment.spec.kind == "pinned":
            return "live" if version == deployment.spec.versions[0] else None
        if version == deployment.stable:
            return "stable"
        if version == deployment.spec.candidate:
            return "shadow"
        return "candidate" if version in deployment.spec.versions else None

    async def _move(
        self, current: Deployment, spec: PolicySpec, stable: str, guard: GuardSpec, change: Change
    ) -> Deployment:
        """A change forward: the state it replaces goes on the history, for ``rollback``."""
        history = (*current.history, current.state)
        return await self._change(current, spec, stable, guard, history, change)

    async def _change(
        self,
        current: Deployment,
        spec: PolicySpec,
        stable: str,
        guard: GuardSpec,
        history: tuple[LiveState, ...],
        change: Change,
    ) -> Deployment:
        """Write the change; a policy with other arms (or of another kind) starts its figures
        from zero, and the figures of the one it ends go in the audit event."""
        model = current.model
        fresh = (current.spec.kind, current.spec.versions, current.spec.candidate) != (
            spec.kind,
            spec.versions,
            spec.candidate,
        )
        if fresh and current.spec.kind != "pinned":
            change = Change(
                change.actor,
                change.action,
                change.reason,
                {**change.details, "ended": await self._figures(current)},
            )
        started = time.time() if fresh else current.started_at
        saved = await self._save(model, spec, stable, guard, history, current, change, started)
        if fresh:
            await self.stats.reset(model, spec.versions)
        return saved

    async def _save(
        self,
        model: str,
        spec: PolicySpec,
        stable: str,
        guard: GuardSpec,
        history: tuple[LiveState, ...],
        current: Deployment | None,
        change: Change,
        started_at: float = 0.0,
    ) -> Deployment:
        new = Deployment(model, spec, guard, stable, 0, history, started_at)
        saved = await self._store.save(new, current.generation if current is not None else None, change)
        fresh = current is None or current.spec != saved.spec
        self._deployments = {**self._deployments, model: saved}  # one swap: old or new, never both
        if fresh:
            self._forget_window(model)
        log.info("deployment of %s: %s (%s by %s)", model, saved.describe(), change.action, change.actor)
        return saved

    def _remember(self, deployment: Deployment) -> Deployment:
        self._deployments = {**self._deployments, deployment.model: deployment}
        return deployment

    async def _deployment_of(self, model: str) -> Deployment:
        """``model``'s deployment; read from the database when this process has not seen it yet.
        A model served before deployments were recorded gets one: its newest version stays live."""
        deployment = self._deployments.get(model)
        if deployment is not None:
            return deployment
        stored = await self._store.get(model)
        if stored is not None:
            return self._remember(stored)
        newest = max((v.version for v in self._catalog.served_versions(model)), key=int)
        change = Change(
            ADOPTED, "go-live", "served before deployments were recorded; its newest version stays live"
        )
        try:
            return await self._save(model, pinned(newest), newest, GuardSpec(), (), None, change)
        except Conflict:
            return self._remember(await self._store.get(model) or self._deployments[model])

    def _served_or_none(self, model: str) -> list[ServedVersion]:
        try:
            return self._catalog.served_versions(model)
        except NotFound:
            return []

    def _check_served(self, model: str, versions: list[str], what: str = "") -> None:
        live = {v.version for v in self._catalog.served_versions(model)}
        missing = [v for v in versions if v not in live]
        if missing:
            prefix = f"{what}: " if what else ""
            raise NotFound(
                f"{prefix}model '{model}' has no loaded version {missing[0]} "
                f"(loaded: {', '.join(sorted(live, key=int))})"
            )

    async def _figures(self, deployment: Deployment) -> dict[str, dict[str, Any]]:
        """What each arm of ``deployment`` did since it began, for the audit log."""
        try:
            stats = await self.stats.snapshot(deployment.model)
        except Exception:  # statistics out of reach: the window figures still tell something
            stats = {}
        windows = self._guards.get(deployment.model)
        figures: dict[str, dict[str, Any]] = {}
        for version in deployment.spec.arms:
            arm = stats.get(version, ArmStats())
            outcome = windows.summary(version) if windows is not None else None
            figures[version] = {
                "requests": arm.pulls,
                "rewards": arm.rewards,
                "mean_reward": arm.mean,
                "error_rate": outcome.error_rate if outcome else None,
                "p99_ms": outcome.p99_ms if outcome else None,
            }
        return figures

    def _roll_back_later(self, deployment: Deployment, candidate: str, reason: str) -> None:
        # Route away at once in this process; the write (and other processes) follow.
        back = Deployment(
            deployment.model,
            pinned(deployment.stable),
            deployment.guard,
            deployment.stable,
            deployment.generation,
            _undone(deployment),
            time.time(),
        )
        figures = self._figures_of_windows(deployment)
        self._deployments = {**self._deployments, deployment.model: back}
        self._forget_window(deployment.model)
        why = f"guard: version {candidate} {reason}"
        self._guard_events[deployment.model] = (
            f"rolled back version {candidate} at {time.strftime('%H:%M:%S')}: {reason}"
        )
        log.warning("automatic rollback of %s to version %s: %s", deployment.model, deployment.stable, why)
        self._on_rollback(deployment.model, "automatic")
        self._in_background(self._write_rollback(deployment, back, why, figures))

    def _figures_of_windows(self, deployment: Deployment) -> dict[str, Any]:
        windows = self._guards.get(deployment.model)
        if windows is None:
            return {}
        return {version: dataclasses.asdict(windows.summary(version)) for version in deployment.spec.arms}

    def _in_background(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("routing bookkeeping failed: %s", task.exception())

    async def _write_rollback(
        self, old: Deployment, back: Deployment, why: str, windows: dict[str, Any]
    ) -> None:
        ended = {
            version: {**arm, **windows.get(version, {})}
            for version, arm in (await self._figures(old)).items()
        }
        change = Change(AUTOMATIC, "auto-rollback", why, {"ended": ended})
        try:
            saved = await self._store.save(back, old.generation, change)
        except Conflict:
            # Another gateway process changed it first (maybe the same rollback): refresh adopts theirs.
            log.info("the deployment of %s changed elsewhere before this rollback was written", old.model)
            return
        except Exception:
            log.exception("could not record the automatic rollback of %s", old.model)
            return
        if self._deployments.get(old.model) is back:
            self._deployments = {**self._deployments, old.model: saved}
        await self.stats.reset(old.model, back.spec.versions)

    def changed_elsewhere(self, model: str) -> None:
        """A notification that another process changed ``model``'s deployment: re-read now."""
        self._refresh_now.set()

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_now.wait(), self._refresh_s)
            self._refresh_now.clear()
            try:
                stored = await self._store.all()
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
        self._shadows.pop(model, None)
        self._decisions[model] = 0
        self._routed.pop(model, None)

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

    async def live_version(self, model: str) -> str:
        """The version a request naming none gets now: the live one, or a rollout's stable one."""
        deployment = self._deployments.get(model) or await self._deployment_of(model)
        return deployment.live_version or deployment.stable

    async def _arm_stats(self, model: str) -> dict[str, ArmStats]:
        try:
            return await self.stats.snapshot(model)
        except Exception as error:
            raise Unavailable(f"routing statistics are out of reach ({error}); retry later") from None

    async def serving(self, model: str) -> Serving:
        """What serves ``model``: the live version, or the arms and their shares; and what is staged."""
        deployment = self._deployments.get(model) or await self._deployment_of(model)
        loaded = [v.version for v in self._catalog.served_versions(model)]
        stats = await self._arm_stats(model) if deployment.spec.kind in BANDITS else {}
        return _serving(deployment, loaded, stats)

    async def status(self, model: str) -> DeploymentStatus:
        deployment = self._deployments.get(model) or await self._deployment_of(model)
        loaded = [v.version for v in self._catalog.served_versions(model)]
        stats = await self._arm_stats(model)
        serving = _serving(deployment, loaded, stats)
        weights = {arm.version: arm.share for arm in serving.arms}
        windows = self._guards.get(model)
        total = sum(stats.get(v, ArmStats()).pulls for v in deployment.spec.versions)
        arms = []
        for version in deployment.spec.arms:
            arm = stats.get(version, ArmStats())
            low, high = arm.ci95()
            outcome = windows.summary(version) if windows is not None else None
            routed = version in deployment.spec.versions
            arms.append(
                ArmStatus(
                    version=version,
                    stable=version == deployment.stable,
                    role=serving.role_of(version),
                    weight=None if deployment.spec.kind in BANDITS else weights.get(version),
                    pulls=arm.pulls,
                    traffic_share=arm.pulls / total if total and routed else None,
                    requests_last_minute=self.recent.total(model, version),
                    rewards=arm.rewards,
                    mean_reward=arm.mean,
                    reward_ci95=[low, high] if arm.rewards else None,
                    requests=outcome.requests if outcome else 0,
                    error_rate=outcome.error_rate if outcome else None,
                    p50_ms=outcome.p50_ms if outcome else None,
                    p99_ms=outcome.p99_ms if outcome else None,
                )
            )
        base = stats.get(deployment.stable, ArmStats())
        differences = [
            difference
            for version in deployment.spec.versions
            if version != deployment.stable
            and (
                difference := reward_difference(
                    version, deployment.stable, stats.get(version, ArmStats()), base
                )
            )
        ]
        tally = self._shadows.get(model)
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
            started_at=deployment.started_at,
            serving=serving,
            arms=arms,
            reward_differences=differences,
            shadow=tally.status()
            if tally is not None and tally.version == deployment.spec.candidate
            else None,
            can_roll_back_to=deployment.history[-1].describe() if deployment.history else None,
            live_versions=loaded,
            checked_at=time.time(),
        )

    def observe_shadow(self, model: str, version: str, result: str, delta_ms: float | None) -> None:
        """A shadow copy's outcome: agree, differ or error, and its latency minus the answer's."""
        tally = self._shadows.get(model)
        if tally is None or tally.version != version:
            tally = self._shadows[model] = ShadowTally(version)
        tally.add(result, delta_ms)


def _serving(deployment: Deployment, loaded: list[str], stats: dict[str, ArmStats]) -> Serving:
    spec = deployment.spec
    arms: list[ArmShare] = []
    if spec.kind == "pinned":
        arms.append(ArmShare(version=spec.versions[0], role="live", share=1.0))
        summary = f"version {spec.versions[0]}"
    elif spec.kind == "shadow":
        assert spec.candidate is not None
        arms.append(ArmShare(version=spec.versions[0], role="live", share=1.0))
        arms.append(ArmShare(version=spec.candidate, role="shadow", share=spec.shadow_share))
        summary = f"version {spec.versions[0]}, copies of {spec.shadow_share:.0%} to {spec.candidate}"
    else:
        if spec.kind == "canary":
            weights = spec.weights or {}
            total = sum(weights.values())
            shares: dict[str, float | None] = {v: weights.get(v, 0.0) / total for v in spec.versions}
        else:
            pulls = sum(stats.get(v, ArmStats()).pulls for v in spec.versions)
            shares = {v: stats.get(v, ArmStats()).pulls / pulls if pulls else None for v in spec.versions}
        for version in spec.versions:
            role: Role = "stable" if version == deployment.stable else "candidate"
            arms.append(ArmShare(version=version, role=role, share=shares[version]))
        parts = "/".join(f"{v}:{shares[v]:.0%}" if shares[v] is not None else f"{v}:-" for v in spec.versions)
        summary = f"{spec.kind} {parts} (stable {deployment.stable})"
    used = set(spec.arms)
    return Serving(
        policy=spec.kind,
        live_version=deployment.live_version,
        stable=deployment.stable,
        arms=arms,
        staged=[v for v in sorted(loaded, key=int) if v not in used],
        summary=summary,
    )


def _undone(deployment: Deployment) -> tuple[LiveState, ...]:
    """The history once the guard has undone ``deployment``'s rollout: the rollouts that led to it
    go, and so does the state it returns to (pinned to the stable version), which is live again."""
    history = list(deployment.history)
    while history and history[-1].spec.kind != "pinned":
        history.pop()
    if history and history[-1] == LiveState(pinned(deployment.stable), deployment.stable):
        history.pop()
    return tuple(history)
