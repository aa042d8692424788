"""Drift alert rules: conditions, judging a report, and state changes that happen exactly once."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from core.errors import InvalidInput
from gateway.database.engine import Database
from gateway.drift.alerts import AlertStore, judge, parse_conditions
from gateway.drift.report import DriftReport, FeatureDrift
from gateway.registry import audit
from tests.conftest import close_any, open_any


def report(rows: int, psis: list[float], *, js: float | None = None) -> DriftReport:
    features = [
        FeatureDrift(
            name=f"x[{i}]",
            side="input",
            psi=p,
            ks=p / 4,
            drifted=p > 0.2,
            reference_shares=[],
            live_shares=[],
        )
        for i, p in enumerate(psis)
    ]
    return DriftReport(
        model="m",
        version="1",
        window="5m",
        status="drift" if any(f.drifted for f in features) else "ok",
        rows=rows,
        reference_rows=1000,
        reference_source="reference",
        score=sum(psis) / len(psis),
        drifted_share=sum(f.drifted for f in features) / len(features),
        classes_js=js,
        features=sorted(features, key=lambda f: f.psi, reverse=True),
    )


def test_conditions_parse_and_name_what_is_wrong() -> None:
    parsed = parse_conditions(" psi > 0.2, share>=0.5 ,js>0.1")
    assert [str(c) for c in parsed] == ["psi>0.2", "share>=0.5", "js>0.1"]
    for bad, says in [
        ("accuracy>0.2", "METRIC one of psi, ks, score, share, js"),
        ("psi<0.2", "is not a drift condition"),
        ("psi>", "is not a drift condition"),
        ("", "give 1 to 8 conditions"),
        (",".join(["psi>0.1"] * 9), "give 1 to 8 conditions"),
    ]:
        with pytest.raises(InvalidInput, match=says):
            parse_conditions(bad)


async def test_a_rule_fires_on_any_condition_and_says_nothing_below_its_minimum_rows(
    database: Database,
) -> None:
    store = AlertStore(database)
    rule = await store.set("m", "psi>0.2, js>0.3", 500, "5m", None, "key:a")
    assert rule.when == "psi>0.2, js>0.3"
    assert await store.rule("m") == rule
    assert judge(rule, report(400, [0.9, 0.0])).state is None  # too few rows to say
    fired = judge(rule, report(600, [0.9, 0.0]))
    assert fired.state == "firing"
    assert fired.breached == ["psi=0.9>0.2"]
    assert judge(rule, report(600, [0.01, 0.02], js=0.5)).breached == ["js=0.5>0.3"]
    assert judge(rule, report(600, [0.01, 0.02], js=0.1)).state == "ok"
    assert judge(rule, report(600, [0.01], js=None).model_copy(update={"status": "no traffic"})).state is None


def audited(connection: sa.Connection) -> None:
    audit.append(connection, audit.AuditEvent(actor="drift-monitor", action="drift-alert", model="m"))


async def test_a_state_change_is_won_by_one_process_and_a_new_rule_starts_over(database_url: str) -> None:
    first, second = await open_any(database_url), await open_any(database_url)  # two gateway processes
    try:
        one, other = AlertStore(first), AlertStore(second)
        await one.set("m", "psi>0.2", 1, "5m", "http://127.0.0.1:9/hook", "key:a")
        assert not await one.change("m", "1", "ok", audited)  # first seen ok: no change to tell
        assert await one.change("m", "1", "firing", audited)
        assert not await other.change("m", "1", "firing", audited)
        assert await other.change("m", "1", "ok", audited)
        assert [s.state for s in await one.states("m")] == ["ok"]
        await other.set("m", "score>0.1", 10, "1h", None, "key:b")
        assert await one.states("m") == []
        actions = [e.action for e in await first.read(lambda c: audit.events(c, model="m", limit=10))]
        assert actions.count("drift-alert-set") == 2
        assert actions.count("drift-alert") == 2  # only the changes that happened
        assert await one.clear("m", "key:a")
        assert not await other.clear("m", "key:a")
        assert await one.rule("m") is None
        assert await one.rules() == []
    finally:
        await close_any(first)
        await close_any(second)


async def test_min_rows_is_bounded(database: Database) -> None:
    with pytest.raises(InvalidInput, match="min_rows must be between 1 and"):
        await AlertStore(database).set("m", "psi>0.2", 0, "5m", None, "key:a")
