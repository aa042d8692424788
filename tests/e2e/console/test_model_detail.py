"""The console's model detail page in a real Chromium against ``mdeploy serve --demo``."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as visible
from selenium.webdriver.support.wait import WebDriverWait

from tests.e2e.console.browsing import (
    NARROW,
    NEEDS_CHROMIUM,
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

POLL_MS = 5000  # model.js: the series


def test_the_model_detail_page_shows_versions_live_charts_and_the_audit_log(
    demo: Demo, browser: Chrome, screenshots: Path
) -> None:
    model = "digits-sklearn"
    headers = {"Authorization": f"Bearer {demo.admin_key}"}
    with httpx.Client(base_url=demo.url, headers=headers) as client:
        for _ in range(5):
            answered = client.post(f"/v1/models/{model}:predict", json={"instances": [digit()]})
            assert answered.status_code == 200, answered.text
        counted = client.post(
            f"/v1/models/{model}/feedback",
            json={"request_id": answered.headers["x-request-id"], "reward": 1.0},
        )
        assert counted.status_code == 200, counted.text
        digest = client.get(f"/v1/admin/models/{model}/versions/1").json()["digest"]

    sign_in(browser, demo.console, demo.admin_key)
    model_rows(browser, 2)
    # The model's name is a link, reached and followed with the keyboard.
    link = browser.find_element(By.LINK_TEXT, model)
    assert str(link.get_attribute("href")).endswith(f"#/models/{model}")
    link.send_keys(Keys.ENTER)
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "model-title"), model))
    assert browser.current_url.endswith(f"#/models/{model}")

    versions = browser.find_element(By.ID, "versions-table")
    wait(browser).until(lambda d: f"sha256:{digest}" in versions.text)
    assert "commit " in versions.text
    assert "parent " in versions.text
    assert "in pixels: FP32 [-1, 64]" in versions.text
    assert "passed" in versions.text  # parity
    assert not browser.find_element(By.ID, "versions-note").is_displayed()

    audit = browser.find_element(By.ID, "audit-table")
    wait(browser).until(lambda d: "push" in audit.text and "sha256:" in audit.text)

    chart = "#chart-requests .plot canvas"
    WebDriverWait(browser, 25).until(lambda d: d.find_elements(By.CSS_SELECTOR, chart))
    for name in ("latency", "errors", "reward"):
        assert browser.find_elements(By.CSS_SELECTOR, f"#chart-{name} .plot canvas")
    summary = browser.find_element(By.ID, "chart-requests-summary")
    WebDriverWait(browser, 25).until(lambda d: re.search(r"v1: 0\.[0-9]*[1-9]|v1: [1-9]", summary.text))
    figure = browser.find_element(By.ID, "chart-requests")
    assert figure.get_attribute("aria-describedby") == "chart-requests-summary"
    shoot(browser, screenshots, "model-detail")
    browser.execute_script("arguments[0].scrollIntoView()", figure)
    shoot(browser, screenshots, "model-detail-charts")

    browser.set_window_size(*NARROW)
    wait(browser).until(
        lambda d: (
            d.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            <= 0
        )
    )
    shoot(browser, screenshots, "model-detail-narrow")
    browser.execute_script("arguments[0].scrollIntoView()", figure)
    shoot(browser, screenshots, "model-detail-charts-narrow")

    # Leaving the page stops the polling: its 5 s timer is cleared (the models page has its own).
    count = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/series?')).length"
    assert browser.execute_script(count) >= 1
    assert POLL_MS in live_intervals(browser)
    browser.find_element(By.LINK_TEXT, "← All models").click()
    model_rows(browser, 2)
    assert POLL_MS not in live_intervals(browser)
    assert severe_entries(browser) == []
