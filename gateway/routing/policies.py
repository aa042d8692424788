"""Routing policies: which version (arm) answers a request that names none.

* ``pinned``: one version.
* ``canary``: fixed weights (e.g. 90/10). With a routing key the draw is a hash of the key, so
  the same key keeps its version while the weights are unchanged.
* ``shadow``: the first version answers; ``candidate`` gets a copy of a ``shadow_share`` of the
  traffic (chosen by the routing key's hash when there is one), compared, never returned.
* ``epsilon-greedy``, ``ucb1``, ``thompson``: bandits learning from rewards in [0, 1].

Bandits use pulls (decisions) and rewards (feedback) separately, because feedback arrives late
or never: UCB1's exploration bonus shrinks with an arm's pulls, its mean comes from rewards.
Thompson sampling keeps a Beta posterior per arm updated fractionally, ``alpha += r`` and
``beta += 1 - r``: exact Beta-Bernoulli for 0/1 rewards, and for rewards in [0, 1] the usual
fractional update, whose posterior mean is the empirical mean shrunk towards the prior.
Before exploiting, every arm gets ``min_pulls`` pulls and the first ``warmup`` decisions after
a rollout are uniform.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidInput

PolicyKind = Literal["pinned", "canary", "shadow", "epsilon-greedy", "ucb1", "thompson"]
BANDITS: tuple[PolicyKind, ...] = ("epsilon-greedy", "ucb1", "thompson")
MAX_ARMS = 16

Version = str


class PolicySpec(BaseModel):
    """A deployment's policy, as stored and as the admin API takes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: PolicyKind
    versions: list[Version] = Field(min_length=1, max_length=MAX_ARMS)
    weights: dict[Version, float] | None = None
    """canary: a weight per version (any positive scale: 90/10 or 0.9/0.1)."""
    candidate: Version | None = Field(default=None, max_length=32)
    """shadow: the version that receives copies."""
    shadow_share: float = Field(default=1.0, ge=0.0, le=1.0)
    """shadow: the share of requests copied to the candidate."""
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0)
    """epsilon-greedy: the probability of a uniform choice."""
    prior_alpha: float = Field(default=1.0, gt=0.0, le=1e6)
    prior_beta: float = Field(default=1.0, gt=0.0, le=1e6)
    """thompson: the Beta prior of every arm."""
    min_pulls: int = Field(default=0, ge=0, le=1_000_000)
    """bandits: pulls each arm gets before the policy exploits."""
    warmup: int = Field(default=0, ge=0, le=10_000_000)
    """bandits: the first ``warmup`` decisions after a rollout are uniform."""
    auto_reward_latency_ms: float | None = Field(default=None, gt=0.0, le=600_000.0)
    """bandits: when set, each routed request is rewarded at once, 1 when it succeeded within
    this latency and 0 otherwise, for models without user feedback."""

    def check(self) -> None:
        """Refuse specs that are well-typed but do not make sense, saying what to change."""
        versions = self.versions
        for version in versions:
            if not version.isdecimal() or len(version) > 32:
                raise InvalidInput(f"policy versions are version numbers such as '3', not {version!r}")
        if len(set(versions)) != len(versions):
            raise InvalidInput(f"policy versions must be distinct, got {versions}")
        if self.kind in ("pinned", "shadow") and len(versions) != 1:
            raise InvalidInput(f"a {self.kind} policy serves exactly one version, got {versions}")
        if self.kind in ("canary", *BANDITS) and len(versions) < 2:
            raise InvalidInput(f"a {self.kind} policy needs at least two versions, got {versions}")
        if self.kind == "canary":
            weights = self.weights or {}
            if set(weights) != set(versions):
                raise InvalidInput(
                    f"canary weights need one weight per version {versions}, got {sorted(weights)}"
                )
            if any(not math.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise InvalidInput("canary weights must be finite, non-negative and not all zero")
        elif self.weights is not None:
            raise InvalidInput(f"weights belong to canary policies, not {self.kind}")
        if self.kind == "shadow":
            if self.candidate is None:
                raise InvalidInput("a shadow policy needs a candidate version (it receives the copies)")
            if not self.candidate.isdecimal():
                raise InvalidInput(f"the shadow candidate is a version number, not {self.candidate!r}")
            if self.candidate in versions:
                raise InvalidInput("the shadow candidate must differ from the version that answers")
        elif self.candidate is not None:
            raise InvalidInput(f"a candidate belongs to shadow policies, not {self.kind}")
        if self.auto_reward_latency_ms is not None and self.kind not in BANDITS:
            raise InvalidInput("auto_reward_latency_ms rewards bandit arms; use it with a bandit policy")

    @property
    def arms(self) -> list[Version]:
        """Every version the policy sends requests (or copies) to."""
        return [*self.versions, *([self.candidate] if self.candidate else [])]


@dataclass(frozen=True)
class ArmStats:
    """What a bandit knows of one arm: decisions, and the rewards heard so far."""

    pulls: int = 0
    rewards: int = 0
    reward_sum: float = 0.0
    reward_sq: float = 0.0

    @property
    def mean(self) -> float | None:
        return self.reward_sum / self.rewards if self.rewards else None

    def ci95(self) -> tuple[float, float]:
        """A normal-approximation 95% interval of the mean reward, clipped to [0, 1]."""
        if self.rewards < 2:
            return (0.0, 1.0)
        mean = self.reward_sum / self.rewards
        variance = max(0.0, (self.reward_sq - self.rewards * mean * mean) / (self.rewards - 1))
        half = 1.96 * math.sqrt(variance / self.rewards)
        return (max(0.0, mean - half), min(1.0, mean + half))


@dataclass(frozen=True)
class Choice:
    version: Version
    shadow: Version | None = None


def choose(
    spec: PolicySpec,
    stats: Mapping[Version, ArmStats],
    rng: random.Random,
    routing_key: str | None,
    decisions: int,
) -> Choice:
    """The version for one request; ``decisions`` counts earlier ones since the rollout."""
    if spec.kind == "pinned":
        return Choice(spec.versions[0])
    if spec.kind == "canary":
        assert spec.weights is not None
        draw = _key_fraction(routing_key) if routing_key else rng.random()
        return Choice(_weighted(spec.versions, spec.weights, draw))
    if spec.kind == "shadow":
        draw = _key_fraction(routing_key) if routing_key else rng.random()
        return Choice(spec.versions[0], spec.candidate if draw < spec.shadow_share else None)
    arms = {version: stats.get(version, ArmStats()) for version in spec.versions}
    if decisions < spec.warmup:
        return Choice(rng.choice(spec.versions))
    starved = [v for v, arm in arms.items() if arm.pulls < spec.min_pulls]
    if starved:
        return Choice(min(starved, key=lambda v: (arms[v].pulls, rng.random())))
    if spec.kind == "epsilon-greedy":
        return Choice(_epsilon_greedy(arms, spec.epsilon, rng))
    if spec.kind == "ucb1":
        return Choice(_ucb1(arms, rng))
    return Choice(_thompson(arms, spec.prior_alpha, spec.prior_beta, rng))


def _key_fraction(key: str) -> float:
    """A fraction in [0, 1) that depends only on ``key``: the same key, the same draw."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _weighted(versions: Sequence[Version], weights: Mapping[Version, float], draw: float) -> Version:
    total = sum(weights[v] for v in versions)
    edge = 0.0
    for version in versions:
        edge += weights[version] / total
        if draw < edge:
            return version
    return next(v for v in reversed(versions) if weights[v] > 0)  # draw at the rounding edge


def _best(scores: Mapping[Version, float], rng: random.Random) -> Version:
    top = max(scores.values())
    return rng.choice([v for v, score in scores.items() if score == top])


def _epsilon_greedy(arms: Mapping[Version, ArmStats], epsilon: float, rng: random.Random) -> Version:
    if rng.random() < epsilon:
        return rng.choice(list(arms))
    # An arm without rewards yet counts as promising, so each is tried before one is trusted.
    return _best({v: arm.mean if arm.mean is not None else math.inf for v, arm in arms.items()}, rng)


def _ucb1(arms: Mapping[Version, ArmStats], rng: random.Random) -> Version:
    unpulled = [v for v, arm in arms.items() if arm.pulls == 0]
    if unpulled:
        return rng.choice(unpulled)
    log_total = math.log(sum(arm.pulls for arm in arms.values()))
    scores = {
        v: (arm.mean if arm.mean is not None else 1.0) + math.sqrt(2.0 * log_total / arm.pulls)
        for v, arm in arms.items()
    }
    return _best(scores, rng)


def _thompson(arms: Mapping[Version, ArmStats], alpha: float, beta: float, rng: random.Random) -> Version:
    samples = {
        v: rng.betavariate(alpha + arm.reward_sum, beta + max(0.0, arm.rewards - arm.reward_sum))
        for v, arm in arms.items()
    }
    return _best(samples, rng)
