"""Deployments in the gateway database, on SQLite and on a real PostgreSQL: each change is
guarded by the row's generation across gateway processes and written with its audit event."""

from __future__ import annotations

import pytest

from core.errors import Conflict
from gateway.registry import audit
from gateway.routing.deployments import Change, Deployment, DeploymentStore, LiveState, pinned
from gateway.routing.guard import GuardSpec
from gateway.routing.policies import PolicySpec
from tests.conftest import close_any, open_any


async def test_a_change_from_a_stale_generation_is_refused_and_every_change_is_audited(
    database_url: str,
) -> None:
    first, second = await open_any(database_url), await open_any(database_url)  # two gateway processes
    try:
        one, other = DeploymentStore(first), DeploymentStore(second)
        live = await one.save(
            Deployment("m", pinned("1"), GuardSpec(), "1", 0), None, Change("key:a", "go-live")
        )
        assert live.generation == 1
        canary = PolicySpec(kind="canary", versions=["1", "2"], weights={"1": 90, "2": 10})
        history = (LiveState(pinned("1"), "1"),)
        moved = await other.save(
            Deployment("m", canary, GuardSpec(), "1", 0, history), 1, Change("key:b", "rollout", "try 2")
        )
        assert moved.generation == 2
        with pytest.raises(Conflict, match="changed meanwhile"):
            await one.save(Deployment("m", pinned("2"), GuardSpec(), "2", 0), 1, Change("key:a", "promote"))
        stored = await one.get("m")
        assert stored == moved
        assert stored is not None
        assert stored.history == history
        assert await one.all() == {"m": moved}
        await one.drop("m", 2, Change("key:a", "repoint", "last version deleted"))
        assert await other.get("m") is None
        events = await first.read(lambda c: audit.events(c, model="m"))
        assert [(e.action, e.actor, e.to_value) for e in reversed(events)] == [
            ("go-live", "key:a", "pinned 1"),
            ("rollout", "key:b", "canary 1:90/2:10"),
            ("repoint", "key:a", None),
        ]
    finally:
        await close_any(first)
        await close_any(second)
