"""The models page's at-a-glance numbers in a real Chromium against ``mdeploy serve --demo``: the
model that took traffic shows a request rate and a p99, the numbers refresh while the page is
shown, and the refresh stops once the page is left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as visible
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
GLANCE_MS = 10_000  # models.js: the at-a-glance refresh
LABELS = ["Requests/s (5 min)", "p99 latency (5 min)", "Error rate (5 min)"]


def glance(driver: Chrome, model: str) -> dict[str, str]:
    """The row's numbers by column label (each cell's first value, the model's own)."""
    row = driver.find_element(By.CSS_SELECTOR, f"#models-table tbody tr[data-model='{model}']")
    return {
        str(td.get_attribute("data-label")): td.find_element(By.CSS_SELECTOR, ".glance-value").text
        for td in row.find_elements(By.CSS_SELECTOR, "td[data-glance]")
    }


def fetched_since(driver: Chrome, path: str, since_ms: float) -> Any:
    """How many requests for ``path`` the page started after ``since_ms`` (performance.now())."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter((e) => e.name.includes(arguments[0]) && e.startTime > arguments[1]).length",
        path,
        since_ms,
    )


def test_the_models_page_shows_rate_p99_and_errors_and_stops_refreshing_when_left(
    demo: Demo, browser: Chrome, predict_key: str, screenshots: Path
) -> None:
    with httpx.Client(base_url=demo.url, headers={"Authorization": f"Bearer {predict_key}"}) as client:
        for _ in range(8):
            answered = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [digit()]})
            assert answered.status_code == 200, answered.text

    sign_in(browser, demo.console, predict_key)
    browser.execute_script("performance.setResourceTimingBufferSize(5000)")
    model_rows(browser, 2)
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#models-table th.glance-column")]
    assert headers == LABELS

    def traffic_shown(driver: Chrome) -> dict[str, str]:  # empty (false): not yet
        numbers = glance(driver, MODEL)
        rate, p99 = numbers[LABELS[0]], numbers[LABELS[1]]
        return numbers if rate not in ("…", "0") and p99.endswith(" ms") else {}

    numbers = wait(browser).until(traffic_shown)
    assert float(numbers[LABELS[0]]) > 0
    assert float(numbers[LABELS[1]].removesuffix(" ms")) > 0
    assert numbers[LABELS[2]].endswith("%")
    # Refreshed while shown: a second answer within the 10 s period.
    table = browser.find_element(By.ID, "models-table")
    WebDriverWait(browser, 25).until(lambda d: int(table.get_attribute("data-glance-refreshes") or 0) >= 2)
    shoot(browser, screenshots, "models-glance")

    browser.set_window_size(*NARROW)
    rate_cell = browser.find_element(
        By.CSS_SELECTOR, f"#models-table tr[data-model='{MODEL}'] td[data-glance='requests_per_s']"
    )
    wait(browser).until(lambda d: rate_cell.value_of_css_property("display") == "block")
    assert rate_cell.get_attribute("data-label") == LABELS[0]  # the card's label
    label = browser.execute_script("return getComputedStyle(arguments[0], '::before').content", rate_cell)
    assert LABELS[0] in label
    shoot(browser, screenshots, "models-glance-narrow")
    browser.set_window_size(*WIDE)

    # Leaving the page clears its 10 s refresh timer (the detail page sets its own 5 s one).
    assert GLANCE_MS in live_intervals(browser)
    left_at = browser.execute_script("return performance.now()")
    browser.find_element(By.LINK_TEXT, MODEL).send_keys(Keys.ENTER)
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "model-title"), MODEL))
    assert GLANCE_MS not in live_intervals(browser)
    assert fetched_since(browser, "/v1/series/summary", left_at) == 0
    shoot(browser, screenshots, "models-glance-left")
    # A predict key: the console's admin probe is refused, as expected.
    assert severe_entries(browser, ("/v1/admin/models", 403)) == []
