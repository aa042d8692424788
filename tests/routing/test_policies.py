"""Routing policies in-process: spec checks, canary weights and sticky keys, shadow, bandits."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from core.errors import InvalidInput
from gateway.routing.policies import ArmStats, PolicySpec, choose


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"kind": "pinned", "versions": ["1", "2"]}, "exactly one version"),
        ({"kind": "thompson", "versions": ["1"]}, "at least two versions"),
        ({"kind": "ucb1", "versions": ["1", "1"]}, "distinct"),
        ({"kind": "canary", "versions": ["1", "2"], "weights": {"1": 90}}, "one weight per version"),
        ({"kind": "canary", "versions": ["1", "2"], "weights": {"1": 0, "2": 0}}, "not all zero"),
        ({"kind": "canary", "versions": ["1", "2"], "weights": {"1": -1, "2": 2}}, "non-negative"),
        ({"kind": "shadow", "versions": ["1"]}, "needs a candidate"),
        ({"kind": "shadow", "versions": ["1"], "candidate": "1"}, "must differ"),
        ({"kind": "pinned", "versions": ["latest"]}, "version numbers"),
        ({"kind": "ucb1", "versions": ["1", "2"], "weights": {"1": 1, "2": 1}}, "weights belong to canary"),
        (
            {
                "kind": "canary",
                "versions": ["1", "2"],
                "weights": {"1": 1, "2": 1},
                "auto_reward_latency_ms": 5,
            },
            "bandit",
        ),
    ],
)
def test_nonsense_specs_are_refused_with_what_to_change(spec: dict[str, object], complaint: str) -> None:
    with pytest.raises(InvalidInput, match=complaint):
        PolicySpec.model_validate(spec).check()


def test_canary_without_key_follows_the_weights() -> None:
    spec = PolicySpec(kind="canary", versions=["1", "2"], weights={"1": 90, "2": 10})
    spec.check()
    rng = random.Random(1)
    counts = Counter(choose(spec, {}, rng, None, i).version for i in range(20_000))
    assert abs(counts["2"] / 20_000 - 0.1) < 0.01


def test_canary_key_keeps_its_version_and_keys_split_by_weight() -> None:
    spec = PolicySpec(kind="canary", versions=["1", "2"], weights={"1": 0.7, "2": 0.3})
    first = {f"user-{i}": choose(spec, {}, random.Random(i), f"user-{i}", 0).version for i in range(5000)}
    again = {key: choose(spec, {}, random.Random(), key, 99).version for key in first}
    assert first == again
    share = sum(v == "2" for v in first.values()) / len(first)
    assert abs(share - 0.3) < 0.03


def test_shadow_answers_with_the_stable_version_and_copies_a_share() -> None:
    spec = PolicySpec(kind="shadow", versions=["1"], candidate="2", shadow_share=0.25)
    spec.check()
    choices = [choose(spec, {}, random.Random(7), f"k{i}", i) for i in range(4000)]
    assert {c.version for c in choices} == {"1"}
    copied = sum(c.shadow == "2" for c in choices) / len(choices)
    assert abs(copied - 0.25) < 0.03
    assert choose(spec, {}, random.Random(), "k5", 0) == choices[5]  # a key is copied or not, always


def _simulate(spec: PolicySpec, seed: int, requests: int = 3000) -> list[str]:
    rng, world = random.Random(seed), random.Random(seed + 1000)
    truth = {"1": 0.3, "2": 0.6}
    stats = {v: ArmStats() for v in spec.versions}
    served = []
    for decision in range(requests):
        version = choose(spec, stats, rng, None, decision).version
        reward = 1.0 if world.random() < truth[version] else 0.0
        arm = stats[version]
        stats[version] = ArmStats(
            arm.pulls + 1, arm.rewards + 1, arm.reward_sum + reward, arm.reward_sq + reward
        )
        served.append(version)
    return served


@pytest.mark.parametrize("kind", ["epsilon-greedy", "ucb1", "thompson"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bandits_learn_the_better_arm(kind: str, seed: int) -> None:
    served = _simulate(PolicySpec.model_validate({"kind": kind, "versions": ["1", "2"]}), seed)
    assert served[-1000:].count("2") >= 800


def test_warmup_and_min_pulls_explore_before_exploiting() -> None:
    spec = PolicySpec(kind="thompson", versions=["1", "2", "3"], min_pulls=5, warmup=30)
    served = _simulate(spec.model_copy(update={"versions": ["1", "2"]}), seed=4, requests=30)
    assert 5 <= served.count("1") <= 25  # uniform during the warm-up, not greedy
    starving = {"1": ArmStats(9, 9, 9.0, 9.0), "2": ArmStats(9, 9, 0.0, 0.0), "3": ArmStats(2, 0, 0.0, 0.0)}
    assert choose(spec, starving, random.Random(0), None, 100).version == "3"


def test_reward_interval_narrows_with_rewards_and_stays_in_range() -> None:
    few, many = ArmStats(10, 10, 6.0, 6.0), ArmStats(1000, 1000, 600.0, 600.0)
    assert few.mean == many.mean == pytest.approx(0.6)
    low, high = many.ci95()
    assert 0.56 < low < 0.6 < high < 0.64
    assert few.ci95()[1] - few.ci95()[0] > high - low
    assert ArmStats(5, 1, 1.0, 1.0).ci95() == (0.0, 1.0)
    assert ArmStats().mean is None
