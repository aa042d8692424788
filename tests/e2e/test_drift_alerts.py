"""The drift loop with real processes: a model packaged by the CLI with a Parquet reference,
in-distribution traffic, one feature shifted by 3 standard deviations, an alert with an audit
event and a signed webhook to a real local HTTP server, and recovery once the shift stops; and
two gateway processes on one data folder that report their merged traffic."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skops.io

from core.server_process import ServerProcess, start_server_process
from examples.digits import load_data, train_sklearn
from gateway.process import GatewayProcess, start_gateway_process
from gateway.webhooks import SIGNATURE_HEADER, verify
from tests.e2e.conftest import run_cli
from tests.webhook_receiver import WebhookReceiver

MODEL = "watched-digits"
SHIFTED = 36  # a pixel in the middle of the digits
SECRET = "a-test-webhook-secret-of-32-chars"
ENV = {
    "MDEPLOY_DRIFT_SAMPLE_RATE": "1.0",
    # A short window, so that a shift leaves it within the test: ten 1 s buckets.
    "MDEPLOY_DRIFT_WINDOWS": '["10s", "1h"]',
    "MDEPLOY_DRIFT_CHECK_S": "0.5",
    "MDEPLOY_DRIFT_PUBLISH_S": "0.5",
    "MDEPLOY_WEBHOOK_SECRET": SECRET,
    "MDEPLOY_RATE_LIMIT_PREDICT": "1000000/minute",
}


@dataclass
class Fleet:
    folder: Path
    server: ServerProcess
    gateway: GatewayProcess
    rows: np.ndarray
    package: Path


def send(gateway: GatewayProcess, rows: np.ndarray) -> None:
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
        for first in range(0, rows.shape[0], 10):
            answer = client.post(
                f"/v1/models/{MODEL}:predict", json={"instances": rows[first : first + 10].tolist()}
            )
            assert answer.status_code == 200, answer.text


def drift(gateway: GatewayProcess, *args: str) -> dict[str, Any]:
    shown = run_cli(gateway, "drift", MODEL, *args, "--json")
    assert shown.returncode == 0, shown.stderr
    report: dict[str, Any] = json.loads(shown.stdout)
    return report


def audit(gateway: GatewayProcess, action: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{gateway.url}/v1/admin/audit",
        params={"model": MODEL, "action": action},
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
    )
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("drift-alerts")
    data = load_data()
    skops.io.dump(train_sklearn(data), folder / "digits.skops")
    np.save(folder / "samples.npy", data.x_test[:8])
    columns = {f"pixel{j}": data.x_train[:, j] for j in range(data.x_train.shape[1])}
    pq.write_table(pa.table(columns), folder / "train.parquet")
    server = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
    gateway = start_gateway_process(folder / "gateway", [server.address], env=ENV)
    package = folder / "digits.pkg"
    try:
        built = run_cli(
            gateway,
            *("package", str(folder / "digits.skops"), "--name", MODEL, "-o", str(package), "-q"),
            *("--samples", str(folder / "samples.npy"), "--reference", str(folder / "train.parquet")),
        )
        assert built.returncode == 0, built.stderr
        assert "weak reference" not in built.stderr
        pushed = run_cli(gateway, "push", str(package))
        assert pushed.returncode == 0, pushed.stderr
        yield Fleet(folder, server, gateway, data.x_test, package)
    finally:
        gateway.stop(timeout_s=10)
        server.stop(timeout_s=10)


def alert_states(gateway: GatewayProcess) -> dict[str, str]:
    shown = drift(gateway)["alert"]
    return {state["version"]: state["state"] for state in shown["versions"]}


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.2)


def test_a_shift_fires_the_alert_with_an_audit_event_and_a_signed_webhook_and_recovery_clears_it(
    fleet: Fleet,
) -> None:
    receiver = WebhookReceiver(fail_first=1)  # the first attempt fails: the gateway must retry
    try:
        rule = run_cli(
            fleet.gateway,
            *("drift", MODEL, "--alert", "psi>0.2", "--min-rows", "200", "--window", "10s"),
            *("--webhook", receiver.url),
        )
        assert rule.returncode == 0, rule.stderr
        assert "drift alert when psi>0.2 over the last 10s" in rule.stdout
        assert audit(fleet.gateway, "drift-alert-set")

        send(fleet.gateway, fleet.rows)
        calm = drift(fleet.gateway, "--window", "10s")
        assert calm["status"] == "ok", [(f["name"], f["psi"]) for f in calm["features"][:3]]
        assert calm["score"] < 0.1
        wait_until(lambda: alert_states(fleet.gateway).get("1") == "ok", 20, "version 1 judged ok")
        assert receiver.deliveries == []

        shifted = fleet.rows.copy()
        shifted[:, SHIFTED] += 3 * fleet.rows[:, SHIFTED].std()
        send(fleet.gateway, shifted)
        moved = drift(fleet.gateway, "--window", "10s")
        assert moved["features"][0]["name"].endswith(f"[{SHIFTED}]"), moved["features"][:3]
        assert moved["features"][0]["drifted"]
        assert [f["drifted"] for f in moved["features"][1:] if f["side"] == "input"].count(True) <= 2

        fired = receiver.wait_for("drift.alert", timeout_s=30)
        assert receiver.refused == 1  # delivered on a retry
        assert verify(SECRET, fired.headers[SIGNATURE_HEADER], fired.body)
        assert not verify("another-secret-of-enough-length", fired.headers[SIGNATURE_HEADER], fired.body)
        event = fired.event
        assert (event["model"], event["version"], event["state"], event["window"]) == (
            MODEL,
            "1",
            "firing",
            "10s",
        )
        assert event["features"][0]["name"].endswith(f"[{SHIFTED}]")
        assert re.match(r"psi=[0-9.]+>0\.2", event["breached"][0])
        [logged] = audit(fleet.gateway, "drift-alert")
        assert (logged["actor"], logged["version"], logged["to"]) == ("drift-monitor", "1", "firing")
        assert alert_states(fleet.gateway)["1"] == "firing"
        shown = run_cli(fleet.gateway, "drift", MODEL, "--window", "10s")
        assert "alert: psi>0.2 over 10s, min 200 rows: FIRING" in shown.stdout

        metrics = httpx.get(f"{fleet.gateway.url}/metrics").text
        score = re.search(rf'mdeploy_drift_score{{model="{MODEL}",version="1"}} ([0-9.e+-]+)', metrics)
        assert score is not None
        assert float(score.group(1)) > calm["score"]
        pattern = rf'mdeploy_feature_drift{{feature="([^"]+)",model="{MODEL}",version="1"}} ([0-9.e+-]+)'
        features = {name: float(value) for name, value in re.findall(pattern, metrics)}
        assert 1 <= len(features) <= 5  # the top features only: bounded labels
        assert max(features, key=features.__getitem__).endswith(f"[{SHIFTED}]")
        assert max(features.values()) > 0.2

        # The shift stops: in-distribution traffic goes on until the shifted rows leave the window.
        rng = np.random.default_rng(0)

        def calm_traffic() -> None:
            send(fleet.gateway, fleet.rows[rng.choice(len(fleet.rows), 60)])

        recovered = receiver.wait_for("drift.recovered", timeout_s=60, during=calm_traffic)
        assert verify(SECRET, recovered.headers[SIGNATURE_HEADER], recovered.body)
        assert recovered.event["state"] == "ok"
        assert audit(fleet.gateway, "drift-recovered")[0]["to"] == "ok"

        def shift_left_the_window() -> bool:
            calm_traffic()
            report = drift(fleet.gateway, "--window", "10s")
            return report["status"] == "ok" and not report["features"][0]["name"].endswith(f"[{SHIFTED}]")

        wait_until(shift_left_the_window, 30, "the shifted rows out of the 10 s window")
        hour = {window: drift(fleet.gateway, "--window", window)["rows"] for window in ("10s", "1h")}
        assert hour["1h"] > hour["10s"] + len(shifted)  # the hour still holds the shifted rows
        assert len([d for d in receiver.deliveries if d.event["event"] == "drift.alert"]) == 1
    finally:
        receiver.close()


def test_two_gateway_processes_on_one_data_folder_report_the_merged_traffic(fleet: Fleet) -> None:
    second = start_gateway_process(fleet.folder / "gateway", [fleet.server.address], env=ENV)
    try:
        before = drift(fleet.gateway, "--window", "1h")["rows"]
        send(fleet.gateway, fleet.rows[:100])
        send(second, fleet.rows[100:250])
        expected = before + 250

        def both_see_everything() -> bool:
            return all(drift(g, "--window", "1h")["rows"] == expected for g in (fleet.gateway, second))

        wait_until(both_see_everything, 20, f"{expected} rows in both gateways' reports")
        first, other = (drift(g, "--window", "1h") for g in (fleet.gateway, second))
        # KLL merges in another order keep other samples: equal within the sketches' error.
        assert first["score"] == pytest.approx(other["score"], abs=0.005)
    finally:
        second.stop(timeout_s=10)


def test_alert_rules_are_checked(fleet: Fleet) -> None:
    bad = run_cli(fleet.gateway, "drift", MODEL, "--alert", "accuracy<0.9")
    assert bad.returncode == 1
    assert "is not a drift condition" in bad.stderr
    window = run_cli(fleet.gateway, "drift", MODEL, "--alert", "psi>0.2", "--window", "7m")
    assert "one of this gateway's drift windows, 10s, 1h" in window.stderr
    hook = run_cli(fleet.gateway, "drift", MODEL, "--alert", "psi>0.2", "--webhook", "ftp://example")
    assert "http:// or https://" in hook.stderr
    unknown = run_cli(fleet.gateway, "drift", "no-such-model", "--alert", "psi>0.2")
    assert unknown.returncode == 1
    assert "no-such-model" in unknown.stderr
    removed = run_cli(fleet.gateway, "drift", MODEL, "--no-alert")
    assert removed.returncode == 0, removed.stderr
    assert audit(fleet.gateway, "drift-alert-clear")
    assert drift(fleet.gateway)["alert"] is None


def test_status_during_a_rollout_shows_the_candidates_drift_against_the_stable_version(fleet: Fleet) -> None:
    second = fleet.folder / "digits-2.pkg"
    np.save(fleet.folder / "samples-2.npy", fleet.rows[8:20])
    built = run_cli(
        fleet.gateway,
        *("package", str(fleet.folder / "digits.skops"), "--name", MODEL, "-o", str(second), "-q"),
        *(
            "--samples",
            str(fleet.folder / "samples-2.npy"),
            "--reference",
            str(fleet.folder / "train.parquet"),
        ),
    )
    assert built.returncode == 0, built.stderr
    assert run_cli(fleet.gateway, "push", str(second)).returncode == 0
    started = run_cli(
        fleet.gateway, "rollout", MODEL, "--policy", "canary", "--versions", "1,2", "--weights", "50,50"
    )
    assert started.returncode == 0, started.stderr
    send(fleet.gateway, fleet.rows)
    status = json.loads(run_cli(fleet.gateway, "status", MODEL, "--json").stdout)
    [arms] = status["arms_drift"]
    assert (arms["stable"], arms["candidate"], arms["window"]) == ("1", "2", "1h")
    assert arms["candidate_rows"] > 100
    assert arms["stable_rows"] > arms["candidate_rows"]  # version 1 also answered the earlier tests
    assert arms["features"]
    shown = run_cli(fleet.gateway, "status", MODEL)
    assert "drift 2 vs 1 (last 1h): " in shown.stdout
