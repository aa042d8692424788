"""The model page's drift table (reference-versus-live histograms) and reward interval, in a real
Chromium against ``mdeploy serve --demo``."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as visible
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.e2e.console.browsing import (
    NARROW,
    NEEDS_CHROMIUM,
    WIDE,
    Demo,
    digit,
    live_intervals,
    model_rows,
    severe_entries,
    shoot,
    sign_in,
    wait,
)

pytestmark = NEEDS_CHROMIUM

MODEL = "digits-sklearn"
REQUESTS = 60
"""Each answered request is sketched with probability 0.2 (the default ``drift_sample_rate``): 60
requests of 8 rows leave none sampled with probability 0.8**60, about 1e-6."""
DRIFT_MS = 30_000  # drift.js: drift and the reward interval
DRIFT_FETCHES = (
    "return performance.getEntriesByType('resource').filter(e => e.name.includes('/drift?')).length"
)


def send_shifted_traffic_and_feedback(demo: Demo) -> None:
    # Brighter digits than the training rows: the pixels' distributions move, so features drift.
    brighter = [min(16, value + 8) for value in digit()]
    headers = {"Authorization": f"Bearer {demo.admin_key}"}
    with httpx.Client(base_url=demo.url, headers=headers) as client:
        for index in range(REQUESTS):
            answered = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [brighter] * 8})
            assert answered.status_code == 200, answered.text
            counted = client.post(
                f"/v1/models/{MODEL}/feedback",
                json={"request_id": answered.headers["x-request-id"], "reward": 1.0 if index % 3 else 0.0},
            )
            assert counted.status_code == 200, counted.text


def open_model(browser: Chrome, demo: Demo, key: str) -> None:
    sign_in(browser, demo.console, key)
    model_rows(browser, 2)
    browser.find_element(By.LINK_TEXT, MODEL).click()
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "model-title"), MODEL))


def test_an_admin_sees_the_drift_table_with_histograms_and_the_reward_interval(
    demo: Demo, browser: Chrome, screenshots: Path
) -> None:
    send_shifted_traffic_and_feedback(demo)
    open_model(browser, demo, demo.admin_key)

    # The first serving version's table: the top eight features, each with its histogram.
    table = "#drift-versions table"
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, table))
    first = browser.find_element(By.CSS_SELECTOR, table)
    rows = first.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 8
    for row in rows:
        assert row.find_elements(By.CSS_SELECTOR, "td[data-label='Reference vs live'] canvas")
        psi = row.find_element(By.CSS_SELECTOR, "td[data-label='PSI']").text
        assert float(psi) >= 0
        # The histogram's text alternative names the bins live traffic gained and lost most in.
        words = row.find_element(By.CSS_SELECTOR, ".histogram .description").text
        assert re.search(r"gained most in .+ \(live \d+%, reference \d+%\)", words), words
        plot = row.find_element(By.CSS_SELECTOR, ".histogram .plot")
        assert plot.get_attribute("aria-hidden") == "true"
    psis = [float(r.find_element(By.CSS_SELECTOR, "td[data-label='PSI']").text) for r in rows]
    assert psis == sorted(psis, reverse=True)
    section = browser.find_element(By.ID, "drift-section")
    assert "drifted" in section.text  # brighter digits move the pixels well past PSI 0.2
    assert re.search(r"features drifted \(mean PSI [0-9.]+.*over \d+ sampled live rows", section.text)

    # Next to the reward chart: each version's mean with its 95% interval and the count.
    reward = browser.find_element(By.ID, "reward-interval")
    pattern = r"v\d+: mean [0-9.]+, 95% interval [0-9.]+ to [0-9.]+ \(n = \d+\)"
    try:
        WebDriverWait(browser, 25).until(lambda d: re.search(pattern, reward.text))
    except TimeoutException:
        pytest.fail(f"no reward interval: {reward.text!r}")

    # The gateway's drift windows are the choice; another window is read at once.
    window = Select(browser.find_element(By.ID, "drift-window"))
    assert [option.text for option in window.options] == ["5m", "1h", "24h"]
    assert window.first_selected_option.text == "1h"
    window.select_by_visible_text("5m")
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "drift-status"), "Window 5m"))
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{table} canvas"))

    browser.execute_script("arguments[0].scrollIntoView()", reward)  # the line right above the table
    shoot(browser, screenshots, "drift-table")
    browser.set_window_size(*NARROW)
    wait(browser).until(
        lambda d: (
            d.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            <= 0
        )
    )
    browser.execute_script("arguments[0].scrollIntoView()", section)
    shoot(browser, screenshots, "drift-table-narrow")
    browser.set_window_size(*WIDE)

    # Leaving the page stops the 30 s drift polling: its timer is cleared.
    assert browser.execute_script(DRIFT_FETCHES) >= 2
    assert DRIFT_MS in live_intervals(browser)
    browser.find_element(By.LINK_TEXT, "← All models").click()
    model_rows(browser, 2)
    assert DRIFT_MS not in live_intervals(browser)
    assert severe_entries(browser) == []


def test_a_key_without_admin_scope_sees_a_note_and_never_calls_the_drift_route(
    demo: Demo, browser: Chrome, screenshots: Path, predict_key: str
) -> None:
    open_model(browser, demo, predict_key)
    note = wait(browser).until(visible.visibility_of_element_located((By.ID, "drift-admin-note")))
    assert "needs a key with the admin scope" in note.text
    assert "admin key" in browser.find_element(By.ID, "reward-interval").text
    assert not browser.find_element(By.ID, "drift-window").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#drift-versions table") == []
    # The charts load (the page has finished its calls) and still nothing asked for drift.
    WebDriverWait(browser, 25).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-reward .plot canvas"))
    assert browser.execute_script(DRIFT_FETCHES) == 0
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "drift-section"))
    shoot(browser, screenshots, "drift-predict-key")
    # Only the console's own scope probe was refused; nothing from the drift section.
    assert severe_entries(browser, ("/v1/admin/models", 403)) == []
