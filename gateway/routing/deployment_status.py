"""What ``GET /v1/admin/deployments/{model}`` answers: what serves, each arm's numbers, the guard.

Decisions and rewards are counted by every gateway process sharing the statistics; the last
minute's requests, errors, latency and shadow comparisons are this process's own. All of them
start from zero with each rollout; the figures of the one before are in the audit log.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from gateway.drift.report import ArmsDrift
from gateway.routing.comparison import RewardDifference
from gateway.routing.guard import GuardSpec
from gateway.routing.policies import PolicySpec
from gateway.routing.shadow import ShadowStatus
from gateway.serving import Role, Serving


class ArmStatus(BaseModel):
    """One version under the deployment: its traffic, rewards and recent outcomes."""

    version: str
    stable: bool
    role: Role
    weight: float | None
    """The policy's configured share of requests naming no version (canary: its weight over the sum;
    live: 1; shadow candidate: the share of requests copied); null for bandits, which learn it."""
    pulls: int
    """Requests routed to it since the rollout began (every gateway process)."""
    traffic_share: float | None
    """Its share of those requests; null for a version that gets none."""
    requests_last_minute: int
    """Requests routed to it in the last 60 s (this process)."""
    rewards: int
    """Feedback rewards received since the rollout began."""
    mean_reward: float | None
    reward_ci95: list[float] | None = Field(default=None, min_length=2, max_length=2)
    """95% interval of the mean reward, [low, high]."""
    requests: int
    """Outcomes in the guard's window (this process)."""
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None


class GuardStatus(GuardSpec):
    """The rollout guard's settings, what it is doing, and its last automatic rollback."""

    state: str
    """``off``, ``idle (no candidate)`` or ``watching <versions>``."""
    last_rollback: str | None


class DeploymentStatus(BaseModel):
    """A model's deployment: what serves it, and how each arm is doing."""

    model: str
    policy: PolicySpec
    guard: GuardStatus
    stable: str
    generation: int
    """Counts the deployment's changes: a go-live, rollout, promotion or rollback adds one."""
    started_at: float
    """When the current policy began (seconds since the epoch): the figures count from then."""
    serving: Serving
    arms: list[ArmStatus]
    reward_differences: list[RewardDifference]
    """Each candidate's mean reward against the stable version's (once both have rewards)."""
    shadow: ShadowStatus | None
    """The shadow candidate's agreement with the answers returned, and its latency difference."""
    can_roll_back_to: str | None
    """What ``rollback`` without a target returns to; null when nothing came before."""
    live_versions: list[str]
    """Every loaded version: the arms and the staged ones."""
    checked_at: float
    """When these numbers were read (seconds since the epoch)."""
    arms_drift: list[ArmsDrift] = Field(default_factory=list)
    """Each candidate's live inputs and outputs against the stable version's (``GET`` status only;
    versions whose packages carry reference profiles)."""
