"""What serves a model, as every surface shows it: one answer built from its deployment.

``mdeploy list``, ``/v1/models``, ``GET /v2/models/{m}``, ``mdeploy status`` and the admin model
list all read :class:`Serving` from the router, so they cannot disagree with each other or with
the version (``X-Model-Version``) that answers a request naming none.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Role = Literal["live", "stable", "candidate", "shadow", "staged"]
"""live: every request naming no version gets it. stable: the arm a rollout measures against and
returns to. candidate: another arm of a rollout. shadow: gets copies, never answers. staged:
loaded, answers only requests that name it."""


class ArmShare(BaseModel):
    """One version in what serves a model, and its share of the requests that name no version."""

    version: str
    role: Role
    share: float | None
    """live: 1. canary: its weight over the sum of weights. Bandits: its share of the decisions since
    the rollout began (null before the first). shadow: the share of requests copied to it."""


class Serving(BaseModel):
    """Which version a request that names none gets, or the arms and their shares."""

    policy: str
    """pinned, canary, shadow, epsilon-greedy, ucb1 or thompson."""
    live_version: str | None
    """The version every request naming none gets; null while a rollout splits them."""
    stable: str
    """The version that was live when the rollout began (a rollback returns to it)."""
    arms: list[ArmShare]
    staged: list[str]
    """Loaded versions that take no unversioned traffic."""
    summary: str
    """One line: ``version 2`` or ``canary 1:90/2:10 (stable 1)``."""

    def role_of(self, version: str) -> Role:
        for arm in self.arms:
            if arm.version == version:
                return arm.role
        return "staged"
