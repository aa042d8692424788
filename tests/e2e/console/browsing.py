"""What the console's browser tests share: the demo's address and keys, and Selenium helpers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as visible
from selenium.webdriver.support.wait import WebDriverWait

from core.child_process import ChildProcess

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
DEMO_MODELS = {"digits-sklearn", "digits-keras"}
WIDE = (1280, 900)
NARROW = (390, 844)

# Each test module: pytestmark = NEEDS_CHROMIUM.
NEEDS_CHROMIUM = pytest.mark.skipif(
    not (Path(CHROMEDRIVER).exists() and Path(CHROMIUM).exists()),
    reason="needs Debian's chromium and chromium-driver (make system-deps)",
)


@dataclass(frozen=True)
class Demo:
    url: str
    console: str
    admin_key: str
    child: ChildProcess


def shoot(driver: Chrome, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    print(f"screenshot: {path}")
    return path


def wait(driver: Chrome) -> WebDriverWait[Chrome]:
    return WebDriverWait(driver, 15)


def sign_in(driver: Chrome, console: str, key: str) -> None:
    """With the keyboard alone: the key field has focus when the page opens; Enter submits."""
    driver.get(console)
    field = wait(driver).until(visible.visibility_of_element_located((By.ID, "api-key")))
    assert driver.switch_to.active_element == field
    label = driver.find_element(By.CSS_SELECTOR, "label[for='api-key']")
    assert label.text == "API key"
    assert field.get_attribute("type") == "password"
    driver.switch_to.active_element.send_keys(key, Keys.ENTER)


def model_rows(driver: Chrome, count: int) -> list[Any]:
    selector = "#models-table tbody tr"
    wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, selector)) == count)
    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def row_names(driver: Chrome, count: int) -> set[str]:
    return {row.find_element(By.CSS_SELECTOR, "strong").text for row in model_rows(driver, count)}


def severe_entries(driver: Chrome, *expected: tuple[str, int]) -> list[dict[str, Any]]:
    """SEVERE browser log lines, less Chromium's "Failed to load resource" line for each API
    refusal the test expects, given as (path, status)."""
    # Selenium leaves get_log unannotated.
    logged: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    entries = [e for e in logged if e["level"] == "SEVERE"]

    def expected_refusal(entry: dict[str, Any]) -> bool:
        return entry["source"] == "network" and any(
            f"{path} - Failed to load resource: the server responded with a status of {status}"
            in entry["message"]
            for path, status in expected
        )

    return [e for e in entries if not expected_refusal(e)]


def session_key(driver: Chrome) -> Any:
    return driver.execute_script("return sessionStorage.getItem('mdeploy.apiKey')")


def digit() -> list[int]:
    """One real test-set digit (8x8 pixels, 0..16), as the demo models take it."""
    from examples.digits import load_data

    return [int(v) for v in load_data().x_test[0]]


# Test-side instrumentation, added through the DevTools protocol before any page script runs (the
# page's CSP governs its own scripts, not the driver's): the delay of every interval timer still
# set. A page that stops its polling clears its timer, so "no more polling" is checked at once
# instead of by waiting out a poll period.
_TRACK_INTERVALS = """
(() => {
  const live = new Map();
  const set = window.setInterval.bind(window);
  const clear = window.clearInterval.bind(window);
  window.setInterval = (handler, delay, ...rest) => {
    const id = set(handler, delay, ...rest);
    live.set(id, delay);
    return id;
  };
  window.clearInterval = (id) => {
    live.delete(id);
    clear(id);
  };
  Object.defineProperty(window, "__liveIntervals", { value: () => [...live.values()] });
})();
"""


def track_intervals(driver: Chrome) -> None:
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _TRACK_INTERVALS})


def live_intervals(driver: Chrome) -> list[int]:
    """The delays (ms) of the page's interval timers that are still set."""
    return [int(delay) for delay in driver.execute_script("return window.__liveIntervals()")]
