"""What ``GET /v1/admin/deployments/{model}`` answers: the policy, each arm's numbers, the guard."""

from __future__ import annotations

from pydantic import BaseModel, Field

from gateway.routing.guard import GuardSpec
from gateway.routing.policies import PolicySpec


class ArmStatus(BaseModel):
    """One version under the deployment: its traffic, rewards and recent outcomes."""

    version: str
    stable: bool
    pulls: int
    """Requests routed to it (bandits: counted by every gateway process sharing the statistics)."""
    traffic_share: float | None
    """Its share of the routed requests since the last change; null for a version that gets none."""
    weight: float | None
    """Canary: its weight."""
    rewards: int
    """Feedback rewards received."""
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
    """A model's deployment; with no rollout yet: its default version and no arms."""

    model: str
    policy: PolicySpec | None
    guard: GuardStatus | None = None
    stable: str
    generation: int | None = None
    """Counts the deployment's changes: a rollout, rollback or promotion adds one."""
    arms: list[ArmStatus]
    live_versions: list[str]
    checked_at: float | None = None
    """When these numbers were read (seconds since the epoch)."""
