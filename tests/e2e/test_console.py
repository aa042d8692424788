"""The console in a real Chromium (Debian's, through its chromedriver) against ``mdeploy serve --demo``.

Each test saves screenshots of the pages it reaches under ``$MDEPLOY_SCREENSHOTS`` (else the
test's temporary folder) and prints their paths.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as visible
from selenium.webdriver.support.wait import WebDriverWait

from core.child_process import ChildProcess, spawn
from gateway.console import CONTENT_SECURITY_POLICY
from gateway.process import gateway_command

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
DEMO_MODELS = {"digits-sklearn", "digits-keras"}
WIDE = (1280, 900)
NARROW = (390, 844)

pytestmark = pytest.mark.skipif(
    not (Path(CHROMEDRIVER).exists() and Path(CHROMIUM).exists()),
    reason="needs Debian's chromium and chromium-driver (make system-deps)",
)


@dataclass(frozen=True)
class Demo:
    url: str
    console: str
    admin_key: str
    child: ChildProcess


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data_dir = tmp_path_factory.mktemp("console-demo")
    command = [*gateway_command(), "serve", "--demo", "--data-dir", str(data_dir), "--port", "0"]
    child, pushed = spawn([*command, "--grpc-port", "0"], re.compile(r"pushed (.+); try:"), timeout_s=300)
    try:
        log = child.log
        assert set(pushed.group(1).split(", ")) == DEMO_MODELS, log[-3000:]
        announced = re.search(
            r"console \(sign in with an API key\): (http://127\.0\.0\.1:\d+)/console/", child.log
        )
        assert announced is not None, log[-3000:]
        url = announced.group(1)
        yield Demo(url, f"{url}/console/", (data_dir / "admin-key").read_text().strip(), child)
    finally:
        child.process.send_signal(signal.SIGINT)
        try:
            child.process.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
        child.stop()


@pytest.fixture(scope="module")
def predict_key(demo: Demo) -> str:
    created = httpx.post(
        f"{demo.url}/v1/admin/keys",
        json={"scopes": ["predict"], "name": "console-test"},
        headers={"Authorization": f"Bearer {demo.admin_key}"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


@pytest.fixture
def screenshots(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    root = Path(os.environ["MDEPLOY_SCREENSHOTS"]) if os.environ.get("MDEPLOY_SCREENSHOTS") else tmp_path
    folder: Path = root / str(request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def browser() -> Iterator[Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WIDE[0]},{WIDE[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The given driver path: Selenium Manager downloads nothing.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


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


def test_console_pages_load_without_a_key_under_a_strict_content_security_policy(demo: Demo) -> None:
    redirect = httpx.get(f"{demo.url}/console")
    assert redirect.status_code == 307
    assert redirect.headers["location"] == demo.console
    for asset in ("", "console.js", "console.css"):
        answer = httpx.get(demo.console + asset)
        assert answer.status_code == 200, asset
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    page = httpx.get(demo.console).text
    assert re.findall(r"<script[^>]*>", page) == ['<script type="module" src="console.js">']
    assert re.search(r"<[^>]*\s(on\w+|style)=", page) is None, "inline handlers or styles"
    assert "text/javascript" in httpx.get(demo.console + "console.js").headers["content-type"]
    assert httpx.get(demo.console + "missing.js").status_code == 404


def test_admin_key_signs_in_sees_both_demo_models_and_admin_actions_and_signs_out(
    demo: Demo, browser: Chrome, screenshots: Path
) -> None:
    browser.get(demo.console)
    wait(browser).until(visible.visibility_of_element_located((By.ID, "api-key")))
    shoot(browser, screenshots, "sign-in")

    sign_in(browser, demo.console, demo.admin_key)
    assert row_names(browser, 2) == DEMO_MODELS
    assert browser.find_element(By.ID, "admin-note").is_displayed()
    assert browser.find_element(By.ID, "key-kind").text == "Signed in: admin key"
    rows = model_rows(browser, 2)
    for row in rows:
        assert row.find_element(By.CSS_SELECTOR, "td[data-label='Serving']").text == "version 1"
        buttons = row.find_elements(By.CSS_SELECTOR, "td[data-label='Actions'] button")
        assert [b.text for b in buttons] == ["Roll back"]
    # The key is in this tab's sessionStorage only: no cookie, nothing in the URL.
    assert session_key(browser) == demo.admin_key
    assert browser.get_cookies() == []
    assert demo.admin_key not in browser.current_url
    shoot(browser, screenshots, "models-admin")

    # An admin action is a call to the admin API: its refusal comes back as the API's message.
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Roll back digits-keras']").click()
    wait(browser).until(
        visible.text_to_be_present_in_element((By.ID, "action-status"), "nothing to roll back")
    )
    assert browser.find_element(By.ID, "action-status").get_attribute("class") == "error"
    shoot(browser, screenshots, "models-admin-action-refused")

    search = browser.find_element(By.ID, "search")
    search.send_keys("keras", Keys.ENTER)
    assert row_names(browser, 1) == {"digits-keras"}
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "models-status"), "matching"))
    shoot(browser, screenshots, "models-search")

    browser.set_window_size(*NARROW)
    search.clear()
    search.send_keys(Keys.ENTER)
    assert row_names(browser, 2) == DEMO_MODELS
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the narrow layout scrolls sideways by {overflow} px"
    shoot(browser, screenshots, "models-narrow")

    browser.find_element(By.ID, "sign-out").click()
    wait(browser).until(visible.visibility_of_element_located((By.ID, "api-key")))
    assert session_key(browser) is None
    assert not browser.find_element(By.ID, "models-page").is_displayed()
    shoot(browser, screenshots, "signed-out-narrow")
    assert severe_entries(browser, ("/v1/admin/deployments/digits-keras/rollback", 409)) == []


def test_a_wrong_key_is_refused_with_the_api_message_and_not_kept(
    demo: Demo, browser: Chrome, screenshots: Path
) -> None:
    wrong = "mdk_0123456789abcdef_" + "A" * 43
    sign_in(browser, demo.console, wrong)
    alert = browser.find_element(By.ID, "sign-in-error")
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "sign-in-error"), "refused"))
    assert alert.text.startswith("The gateway refused this key: unknown API key mdk_0123456789abcdef_...")
    assert alert.get_attribute("role") == "alert"
    assert session_key(browser) is None
    assert not browser.find_element(By.ID, "models-page").is_displayed()
    shoot(browser, screenshots, "sign-in-refused")
    assert severe_entries(browser, ("/v1/models", 401)) == []


def test_a_predict_only_key_sees_the_models_but_no_admin_actions_which_the_api_refuses(
    demo: Demo, predict_key: str, browser: Chrome, screenshots: Path
) -> None:
    sign_in(browser, demo.console, predict_key)
    assert row_names(browser, 2) == DEMO_MODELS
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "key-kind"), "without admin"))
    assert not browser.find_element(By.ID, "admin-note").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#models-table button") == []
    assert not browser.find_element(By.CSS_SELECTOR, "th.admin-column").is_displayed()
    shoot(browser, screenshots, "models-predict-only")
    # Its detail page shows what the key may read, and says plainly what needs an admin key.
    browser.find_element(By.LINK_TEXT, "digits-keras").click()
    wait(browser).until(visible.visibility_of_element_located((By.ID, "versions-note")))
    versions = browser.find_element(By.ID, "versions-table")
    wait(browser).until(lambda d: "needs an admin key" in versions.text)
    assert "in " in versions.text
    assert "sha256:" not in versions.text
    assert browser.find_element(By.ID, "audit-note").is_displayed()
    assert not browser.find_element(By.ID, "audit-table").is_displayed()
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-requests .plot canvas"))
    shoot(browser, screenshots, "model-detail-predict-only")
    # Hiding the buttons is a courtesy: the API is what refuses.
    refused = httpx.post(
        f"{demo.url}/v1/admin/deployments/digits-keras/rollback",
        json={"reason": "console test"},
        headers={"Authorization": f"Bearer {predict_key}"},
    )
    assert refused.status_code == 403, refused.text
    assert severe_entries(browser, ("/v1/admin/models", 403)) == []


DIGIT = [
    0,
    0,
    7,
    16,
    14,
    3,
    0,
    0,
    0,
    0,
    9,
    14,
    11,
    15,
    0,
    0,
    0,
    0,
    1,
    5,
    0,
    15,
    5,
    0,
    0,
    0,
    0,
    0,
    0,
    16,
    5,
    0,
]
DIGIT += [
    0,
    0,
    0,
    0,
    3,
    16,
    4,
    0,
    0,
    0,
    0,
    1,
    12,
    14,
    1,
    0,
    0,
    0,
    5,
    12,
    16,
    16,
    14,
    1,
    0,
    0,
    8,
    16,
    14,
    10,
    13,
    3,
]


def test_the_model_detail_page_shows_versions_live_charts_and_the_audit_log(
    demo: Demo, browser: Chrome, screenshots: Path
) -> None:
    model = "digits-sklearn"
    headers = {"Authorization": f"Bearer {demo.admin_key}"}
    with httpx.Client(base_url=demo.url, headers=headers) as client:
        for _ in range(5):
            answered = client.post(f"/v1/models/{model}:predict", json={"instances": [DIGIT]})
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

    # Leaving the page stops the polling: no more series requests.
    browser.find_element(By.LINK_TEXT, "← All models").click()
    model_rows(browser, 2)
    count = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/series')).length"
    polled = browser.execute_script(count)
    assert polled >= 1
    time.sleep(6)  # longer than the 5 s poll
    assert browser.execute_script(count) == polled
    assert severe_entries(browser) == []
