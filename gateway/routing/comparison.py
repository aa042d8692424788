"""Is a candidate's mean reward different from the stable version's? Welch's t-test on the arms'
running sums, so no reward has to be kept: count, sum and sum of squares are enough."""

from __future__ import annotations

import math

from pydantic import BaseModel, Field
from scipy import stats as scipy_stats

from gateway.routing.policies import ArmStats


class RewardDifference(BaseModel):
    """A candidate's mean reward minus the stable version's, with its 95% interval and p-value."""

    candidate: str
    stable: str
    difference: float
    ci95: list[float] = Field(min_length=2, max_length=2)
    p_value: float
    """Welch's two-sided t-test: how likely a difference this large is if the means are equal."""


def _variance(arm: ArmStats) -> float:
    mean = arm.reward_sum / arm.rewards
    return max(0.0, (arm.reward_sq - arm.rewards * mean * mean) / (arm.rewards - 1))


def reward_difference(candidate: str, stable: str, a: ArmStats, b: ArmStats) -> RewardDifference | None:
    """``a`` (candidate) against ``b`` (stable); None until each has two rewards."""
    if a.rewards < 2 or b.rewards < 2:
        return None
    mean_a, mean_b = a.reward_sum / a.rewards, b.reward_sum / b.rewards
    var_a, var_b = _variance(a), _variance(b)
    difference = mean_a - mean_b
    se2 = var_a / a.rewards + var_b / b.rewards
    if se2 == 0.0:  # both arms constant: the difference is exact
        p_value = 1.0 if difference == 0.0 else 0.0
        return RewardDifference(
            candidate=candidate,
            stable=stable,
            difference=difference,
            ci95=[difference, difference],
            p_value=p_value,
        )
    test = scipy_stats.ttest_ind_from_stats(
        mean_a, math.sqrt(var_a), a.rewards, mean_b, math.sqrt(var_b), b.rewards, equal_var=False
    )
    # Welch-Satterthwaite degrees of freedom, for the interval that goes with the test.
    dof = se2**2 / ((var_a / a.rewards) ** 2 / (a.rewards - 1) + (var_b / b.rewards) ** 2 / (b.rewards - 1))
    half = float(scipy_stats.t.ppf(0.975, dof)) * math.sqrt(se2)
    return RewardDifference(
        candidate=candidate,
        stable=stable,
        difference=difference,
        ci95=[difference - half, difference + half],
        p_value=float(test.pvalue),
    )
