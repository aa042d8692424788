"""The reward difference between arms, and requests per version over the last minute."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gateway.routing.comparison import reward_difference
from gateway.routing.policies import ArmStats
from gateway.routing.recent import RecentCounts


def arm(rewards: np.ndarray) -> ArmStats:
    return ArmStats(len(rewards), len(rewards), float(rewards.sum()), float((rewards**2).sum()))


def test_the_reward_difference_is_welchs_test_on_the_running_sums() -> None:
    rng = np.random.default_rng(4)
    candidate, stable = (rng.random(300) < 0.6).astype(float), (rng.random(200) < 0.5).astype(float)
    found = reward_difference("2", "1", arm(candidate), arm(stable))
    assert found is not None
    expected = stats.ttest_ind(candidate, stable, equal_var=False)
    assert found.difference == pytest.approx(candidate.mean() - stable.mean())
    assert found.p_value == pytest.approx(expected.pvalue, rel=1e-6)
    low, high = expected.confidence_interval(0.95)
    assert found.ci95 == pytest.approx([low, high], rel=1e-6)


def test_no_difference_until_both_arms_have_two_rewards() -> None:
    assert reward_difference("2", "1", arm(np.array([1.0])), arm(np.array([0.0, 1.0]))) is None
    same = reward_difference("2", "1", arm(np.ones(5)), arm(np.ones(5)))
    assert same is not None
    assert (same.difference, same.p_value) == (0.0, 1.0)


def test_recent_counts_keep_only_the_last_minute() -> None:
    now = [1000.0]
    counts = RecentCounts(60, clock=lambda: now[0])
    for _ in range(3):
        counts.add("m", "1")
    now[0] += 30
    counts.add("m", "1")
    counts.add("m", "2")
    assert (counts.total("m", "1"), counts.total("m", "2")) == (4, 1)
    now[0] += 45
    assert counts.total("m", "1") == 1
    now[0] += 60
    assert counts.total("m", "1") == 0
    counts.forget("m")
    assert counts.total("m", "2") == 0
