"""The console's rollout actions in a real Chromium against ``mdeploy serve --demo``: a canary
started from the model page whose traffic share follows its weights under load, a confirmed
rollback, a cancelled one, and the deletion of a staged version.

Each test first puts ``digits-sklearn`` in a known state through the API (the demo is shared),
and leaves both demo models serving.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from selenium.common.exceptions import TimeoutException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as visible
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.e2e.console.browsing import (
    NARROW,
    NEEDS_CHROMIUM,
    Demo,
    digit,
    model_rows,
    severe_entries,
    shoot,
    sign_in,
    wait,
)

pytestmark = NEEDS_CHROMIUM

MODEL = "digits-sklearn"
DEPLOYMENT = f"/v1/admin/deployments/{MODEL}"
LOAD_PER_S = 20.0
SHARE = re.compile(r"v(\d+): [^;]*?\((\d+)% of traffic")


def admin(demo: Demo) -> httpx.Client:
    return httpx.Client(base_url=demo.url, headers={"Authorization": f"Bearer {demo.admin_key}"}, timeout=60)


def pinned_with_a_staged_candidate(demo: Demo, tmp_path: Path) -> tuple[str, str]:
    """``digits-sklearn``: all traffic on its first version, a second one loaded and staged (pushed
    when an earlier test deleted it); the (stable, candidate) versions."""
    with admin(demo) as client:
        loaded = sorted(client.get(DEPLOYMENT).json()["live_versions"], key=int)
        if len(loaded) < 2:
            from examples.digits import build_sklearn_candidate

            pushed = client.post(
                "/v1/admin/packages",
                content=build_sklearn_candidate(tmp_path).read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert pushed.status_code in (200, 201), pushed.text
            loaded.append(str(pushed.json()["version"]))
        stable, candidate = loaded[0], loaded[1]
        moved = client.post(
            f"{DEPLOYMENT}/rollback", json={"to": stable, "reason": "console test: known state"}
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["serving"]["summary"] == f"version {stable}"
    return stable, candidate


def canary_through_the_api(demo: Demo, stable: str, candidate: str) -> dict[str, Any]:
    body = {
        "policy": {"kind": "canary", "versions": [stable, candidate], "weights": {stable: 50, candidate: 50}},
        "guard": {"enabled": False},
        "reason": "console test: a canary to roll back",
    }
    with admin(demo) as client:
        started = client.put(DEPLOYMENT, json=body)
    assert started.status_code == 200, started.text
    status: dict[str, Any] = started.json()
    return status


def open_model(browser: Chrome, demo: Demo) -> None:
    sign_in(browser, demo.console, demo.admin_key)
    model_rows(browser, 2)
    browser.find_element(By.LINK_TEXT, MODEL).click()
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "model-title"), MODEL))
    wait(browser).until(visible.visibility_of_element_located((By.ID, "rollout-arms")))


def arm_rows(browser: Chrome) -> dict[str, str]:
    rows = browser.find_elements(By.CSS_SELECTOR, "#rollout-arms tbody tr")
    return {str(row.get_attribute("data-version")): row.text for row in rows}


def confirm(browser: Chrome, screenshots: Path, name: str, *, accept: bool) -> None:
    dialog = wait(browser).until(visible.visibility_of_element_located((By.ID, "confirm-dialog")))
    # Cancel has the focus: an Enter pressed by habit changes nothing.
    assert browser.switch_to.active_element.get_attribute("id") == "confirm-cancel"
    shoot(browser, screenshots, name)
    browser.find_element(By.ID, "confirm-ok" if accept else "confirm-cancel").click()
    wait(browser).until(lambda d: not dialog.is_displayed())


def wait_for_status(browser: Chrome, words: str) -> str:
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "rollout-status"), words))
    return str(browser.find_element(By.ID, "rollout-status").text)


@contextmanager
def steady_load(demo: Demo, key: str) -> Iterator[list[int]]:
    """Predictions naming no version, at LOAD_PER_S in a thread, until the block ends; yields their
    status codes."""
    statuses: list[int] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(
            base_url=demo.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            body = {"instances": [digit()]}
            while not stop.wait(1 / LOAD_PER_S):
                statuses.append(client.post(f"/v1/models/{MODEL}:predict", json=body).status_code)

    thread = threading.Thread(target=send, name="steady-load", daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(30)


def shares(browser: Chrome) -> dict[str, int]:
    summary = browser.find_element(By.ID, "chart-requests-summary").text
    return {version: int(share) for version, share in SHARE.findall(summary)}


def test_a_canary_started_from_the_console_shows_both_arms_and_its_traffic_share_follows_the_weights(
    demo: Demo, predict_key: str, browser: Chrome, screenshots: Path, tmp_path: Path
) -> None:
    stable, candidate = pinned_with_a_staged_candidate(demo, tmp_path)
    open_model(browser, demo)
    assert list(arm_rows(browser)) == [stable]
    chart = browser.find_element(By.ID, "chart-requests")
    with steady_load(demo, predict_key) as statuses:
        # Before the canary, the stable version takes (nearly: older buckets count) every request.
        WebDriverWait(browser, 40).until(lambda d: shares(d).get(stable, 0) >= 90)
        before = shares(browser)

        form = browser.find_element(By.ID, "rollout-form")
        assert browser.find_element(By.ID, "rollout-kind-canary").is_selected()
        Select(browser.find_element(By.ID, "rollout-stable")).select_by_value(stable)
        Select(browser.find_element(By.ID, "rollout-candidate")).select_by_value(candidate)
        for field, weight in (("rollout-stable-weight", "70"), ("rollout-candidate-weight", "30")):
            browser.find_element(By.ID, field).clear()
            browser.find_element(By.ID, field).send_keys(weight)
        # The guard judges latency too: on a busy test machine it could end the canary by itself.
        browser.find_element(By.ID, "rollout-guard").click()
        browser.find_element(By.ID, "rollout-reason").send_keys("console test: canary 70/30")
        browser.execute_script("arguments[0].scrollIntoView()", form)
        shoot(browser, screenshots, "rollout-form")
        # The labels name every field for screen readers.
        for field in (
            "rollout-stable",
            "rollout-candidate",
            "rollout-stable-weight",
            "rollout-candidate-weight",
        ):
            assert browser.find_elements(By.CSS_SELECTOR, f"label[for='{field}']"), field
        browser.find_element(By.CSS_SELECTOR, "#rollout-form button[type='submit']").send_keys(Keys.ENTER)
        dialog = browser.find_element(By.ID, "confirm-text")
        confirm(browser, screenshots, "rollout-confirm", accept=True)
        assert "30% of digits-sklearn's requests" in str(dialog.get_attribute("textContent"))

        said = wait_for_status(browser, "Rollout started")
        assert f"canary {stable}:70%/{candidate}:30%" in said
        wait(browser).until(
            visible.text_to_be_present_in_element((By.ID, "rollout-audit"), "audit log: rollout")
        )
        wait(browser).until(lambda d: set(arm_rows(d)) == {stable, candidate})
        arms = arm_rows(browser)
        assert "70%" in arms[stable]
        assert "stable" in arms[stable]
        assert "30%" in arms[candidate]
        assert "candidate" in arms[candidate]
        with admin(demo) as client:
            policy = client.get(DEPLOYMENT).json()["policy"]
        assert policy["kind"] == "canary"
        assert policy["weights"] == {stable: 70.0, candidate: 30.0}
        shoot(browser, screenshots, "rollout-canary-started")

        # The chart's data (its text summary reads the same series) moves to the weights.
        seen: list[dict[str, int]] = []

        def near_the_weights(d: Chrome) -> bool:
            seen.append(shares(d))
            return abs(seen[-1].get(candidate, 0) - 30) <= 8 and abs(seen[-1].get(stable, 0) - 70) <= 8

        try:
            WebDriverWait(browser, 45, poll_frequency=1).until(near_the_weights)
        except TimeoutException:
            raise AssertionError(f"the share never neared 70/30; seen: {seen}") from None
        browser.execute_script("arguments[0].scrollIntoView()", chart)
        shoot(browser, screenshots, "rollout-canary-share")
    assert before[stable] >= 90
    assert len(statuses) > 100
    assert set(statuses) == {200}

    browser.set_window_size(*NARROW)
    wait(browser).until(
        lambda d: (
            d.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            <= 0
        )
    )
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "rollout-section"))
    shoot(browser, screenshots, "rollout-narrow")
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "rollout-form"))
    shoot(browser, screenshots, "rollout-form-narrow")
    assert severe_entries(browser) == []


def test_the_rollback_button_returns_all_traffic_to_the_stable_version_and_shows_its_audit_entry(
    demo: Demo, predict_key: str, browser: Chrome, screenshots: Path, tmp_path: Path
) -> None:
    stable, candidate = pinned_with_a_staged_candidate(demo, tmp_path)
    canary_through_the_api(demo, stable, candidate)
    open_model(browser, demo)
    assert set(arm_rows(browser)) == {stable, candidate}
    shoot(browser, screenshots, "rollback-before")

    browser.find_element(By.ID, "rollout-rollback").click()
    confirm(browser, screenshots, "rollback-confirm", accept=True)
    said = wait_for_status(browser, "Rolled back")
    assert f"now serves version {stable}" in said
    wait(browser).until(
        visible.text_to_be_present_in_element((By.ID, "rollout-audit"), "audit log: rollback")
    )
    wait(browser).until(lambda d: list(arm_rows(d)) == [stable])
    # The page's audit log has it too, newest first.
    newest = browser.find_element(By.CSS_SELECTOR, "#audit-table tbody tr")
    assert "rollback" in newest.text
    assert "console" in newest.text
    shoot(browser, screenshots, "rollback-done")
    browser.execute_script("arguments[0].scrollIntoView()", newest)
    shoot(browser, screenshots, "rollback-audit-log")

    with admin(demo) as client:
        status = client.get(DEPLOYMENT).json()
        assert status["policy"] == {**status["policy"], "kind": "pinned", "versions": [stable]}
        assert status["serving"]["summary"] == f"version {stable}"
    with httpx.Client(base_url=demo.url, headers={"Authorization": f"Bearer {predict_key}"}) as client:
        answered = {
            client.post(f"/v1/models/{MODEL}:predict", json={"instances": [digit()]}).headers[
                "x-model-version"
            ]
            for _ in range(20)
        }
    assert answered == {stable}
    assert severe_entries(browser) == []


def test_cancelling_the_confirmation_or_a_refused_rollout_changes_nothing(
    demo: Demo, browser: Chrome, screenshots: Path, tmp_path: Path
) -> None:
    stable, candidate = pinned_with_a_staged_candidate(demo, tmp_path)
    before = canary_through_the_api(demo, stable, candidate)
    open_model(browser, demo)

    browser.find_element(By.ID, "rollout-rollback").click()
    confirm(browser, screenshots, "cancel-rollback-confirm", accept=False)
    assert "nothing was changed" in wait_for_status(browser, "Cancelled")
    # Escape closes the dialog as Cancel does.
    browser.find_element(By.ID, f"rollout-promote-{candidate}").click()
    wait(browser).until(visible.visibility_of_element_located((By.ID, "confirm-dialog")))
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait(browser).until(lambda d: not d.find_element(By.ID, "confirm-dialog").is_displayed())
    assert "Cancelled" in browser.find_element(By.ID, "rollout-status").text
    shoot(browser, screenshots, "cancelled")

    # A rollout the API refuses shows its message as a refusal.
    Select(browser.find_element(By.ID, "rollout-stable")).select_by_value(stable)
    Select(browser.find_element(By.ID, "rollout-candidate")).select_by_value(stable)
    browser.find_element(By.CSS_SELECTOR, "#rollout-form button[type='submit']").click()
    confirm(browser, screenshots, "refused-confirm", accept=True)
    said = wait_for_status(browser, "Refused")
    assert said == f"Refused: policy versions must be distinct, got ['{stable}', '{stable}']"
    assert browser.find_element(By.ID, "rollout-status").get_attribute("class") == "error"
    assert browser.find_element(By.ID, "rollout-audit").text == ""
    shoot(browser, screenshots, "refused")

    with admin(demo) as client:
        after = client.get(DEPLOYMENT).json()
    assert after["generation"] == before["generation"]
    assert after["policy"] == before["policy"]
    assert set(arm_rows(browser)) == {stable, candidate}
    assert severe_entries(browser, (DEPLOYMENT, 400)) == []


def test_a_staged_version_is_deleted_from_the_console(
    demo: Demo, browser: Chrome, screenshots: Path, tmp_path: Path
) -> None:
    from examples.digits import build_sklearn_candidate

    stable, _ = pinned_with_a_staged_candidate(demo, tmp_path)
    with admin(demo) as client:
        pushed = client.post(
            "/v1/admin/packages",
            content=build_sklearn_candidate(tmp_path, 0.03).read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert pushed.status_code in (200, 201), pushed.text
        staged = str(pushed.json()["version"])
        assert pushed.json()["role"] == "staged"
    open_model(browser, demo)
    button = wait(browser).until(visible.element_to_be_clickable((By.ID, f"rollout-delete-{staged}")))
    assert button.get_attribute("aria-label") == f"Delete {MODEL} version {staged}"
    button.click()
    confirm(browser, screenshots, "delete-confirm", accept=True)
    assert wait_for_status(browser, "Deleted") == f"Deleted {MODEL} v{staged}."
    wait(browser).until(
        visible.text_to_be_present_in_element((By.ID, "rollout-audit"), f"audit log: delete v{staged}")
    )
    wait(browser).until(lambda d: not d.find_elements(By.ID, f"rollout-delete-{staged}"))
    shoot(browser, screenshots, "delete-done")

    with admin(demo) as client:
        status = client.get(DEPLOYMENT).json()
    assert staged not in status["live_versions"]
    assert status["serving"]["summary"] == f"version {stable}"
    assert severe_entries(browser) == []
