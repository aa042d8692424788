"""Every ``check_s``: each served version's drift score (for Prometheus) and its model's alert.

The scores are computed in the background, so a scrape of ``/metrics`` reads the last ones and
costs nothing. A version whose alert state changes gets an audit event (actor
``drift-monitor``, action ``drift-alert`` or ``drift-recovered``) and, when the model's rule
names a webhook, a signed POST (``gateway.webhooks``) with the report's summary.

A firing alert clears only once no condition has held for a whole window (like Prometheus'
``keep_firing_for``): as a shift's rows age out of a window, the rows from before it leave
first, so its share, and the scores, can rise again; without the wait the alert would flap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.drift.alerts import AlertRule, AlertStore, Verdict, judge
from gateway.drift.monitor import DriftMonitor
from gateway.drift.report import DriftReport
from gateway.registry import audit
from gateway.webhooks import WebhookSender

log = logging.getLogger(__name__)

ACTOR = "drift-monitor"
TOP_FEATURES = 5
"""Features per version exported as ``mdeploy_feature_drift`` (the most drifted): bounds the labels."""
SHOWN_IN_EVENTS = 5


@dataclass(frozen=True)
class VersionScore:
    model: str
    version: str
    score: float
    top_features: list[tuple[str, float]]
    """(feature, PSI), most drifted first, at most ``TOP_FEATURES``."""


class DriftWatch:
    def __init__(
        self,
        monitor: DriftMonitor,
        alerts: AlertStore,
        versions: Callable[[], list[tuple[str, str]]],
        *,
        check_s: float,
        webhooks: WebhookSender | None = None,
    ) -> None:
        self._monitor = monitor
        self._alerts = alerts
        self._versions = versions
        self._check_s = check_s
        self._webhooks = webhooks
        self.metrics_window = next(iter(monitor.windows))
        """The shortest window: Prometheus keeps the history, the gauge says what is now."""
        self.scores: dict[tuple[str, str], VersionScore] = {}
        self._breached_at: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="drift-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._check_s)
            try:
                await self.check()
            except Exception:  # the next round tries again
                log.exception("drift check failed")

    async def check(self) -> None:
        rules = {rule.model: rule for rule in await self._alerts.rules()}
        scores: dict[tuple[str, str], VersionScore] = {}
        served = self._versions()
        self._monitor.keep_only(set(served))
        for model, version in served:
            report = await self._monitor.report(model, version, self.metrics_window)
            if report.score is not None:
                top = [(f.name, f.psi) for f in report.features[:TOP_FEATURES]]
                scores[(model, version)] = VersionScore(model, version, report.score, top)
            rule = rules.get(model)
            if rule is None:
                continue
            if rule.window != report.window:
                report = await self._monitor.report(model, version, rule.window)
            verdict = judge(rule, report)
            if verdict.state is not None and not self._too_soon_to_clear(rule, version, verdict):
                await self._settle(rule, report, verdict)
        self.scores = scores

    def _too_soon_to_clear(self, rule: AlertRule, version: str, verdict: Verdict) -> bool:
        now, key = time.monotonic(), (rule.model, version)
        if verdict.state == "firing":
            self._breached_at[key] = now
            return False
        breached = self._breached_at.get(key)
        return breached is not None and now - breached < self._monitor.windows[rule.window].span_s

    async def _settle(self, rule: AlertRule, report: DriftReport, verdict: Verdict) -> None:
        assert verdict.state is not None
        firing = verdict.state == "firing"
        summary = _summary(report)
        event = audit.AuditEvent(
            actor=ACTOR,
            action="drift-alert" if firing else "drift-recovered",
            model=rule.model,
            version=report.version,
            from_value="ok" if firing else "firing",
            to_value=verdict.state,
            reason=", ".join(verdict.breached) if firing else f"no condition of '{rule.when}' holds",
            details=summary,
        )
        changed = await self._alerts.change(
            rule.model, report.version, verdict.state, lambda connection: audit.append(connection, event)
        )
        if not changed:
            return
        log.warning(
            "drift alert of %s version %s: %s (%s)",
            rule.model,
            report.version,
            verdict.state,
            verdict.breached,
        )
        if rule.webhook and self._webhooks is not None:
            payload = {
                "event": "drift.alert" if firing else "drift.recovered",
                "at": datetime.now(UTC).isoformat(),
                "model": rule.model,
                "version": report.version,
                "state": verdict.state,
                "when": rule.when,
                "breached": verdict.breached,
                **summary,
            }
            self._webhooks.send(rule.webhook, str(payload["event"]), payload)


def _summary(report: DriftReport) -> dict[str, Any]:
    return {
        "window": report.window,
        "rows": report.rows,
        "score": report.score,
        "drifted_share": report.drifted_share,
        "classes_js": report.classes_js,
        "features": [
            {"name": f.name, "side": f.side, "psi": f.psi, "ks": f.ks}
            for f in report.features[:SHOWN_IN_EVENTS]
        ],
    }
