"""The console's sign-in and models page in a real Chromium against ``mdeploy serve --demo``.

Each test saves screenshots of the pages it reaches under ``$MDEPLOY_SCREENSHOTS`` (else the
test's temporary folder) and prints their paths.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as visible

from gateway.console import CONTENT_SECURITY_POLICY
from tests.e2e.console.browsing import (
    DEMO_MODELS,
    NARROW,
    NEEDS_CHROMIUM,
    Demo,
    model_rows,
    row_names,
    session_key,
    severe_entries,
    shoot,
    sign_in,
    wait,
)

pytestmark = NEEDS_CHROMIUM


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
    rows = {row.find_element(By.CSS_SELECTOR, "strong").text: row for row in model_rows(browser, 2)}
    serving = {
        name: row.find_element(By.CSS_SELECTOR, "td[data-label='Serving']").text for name, row in rows.items()
    }
    buttons = {
        name: [b.text for b in row.find_elements(By.CSS_SELECTOR, "td[data-label='Actions'] button")]
        for name, row in rows.items()
    }
    # The demo's Keras model has served its one version since it went live; the scikit-learn one
    # has two versions (the demo's canary, or what other tests of this shared demo left).
    assert serving["digits-keras"] == "version 1"
    assert buttons["digits-keras"] == ["Roll back"]
    assert serving["digits-sklearn"]
    assert buttons["digits-sklearn"][-1] == "Roll back"
    # The key is in this tab's sessionStorage only: no cookie, nothing in the URL.
    assert session_key(browser) == demo.admin_key
    assert browser.get_cookies() == []
    assert demo.admin_key not in browser.current_url
    shoot(browser, screenshots, "models-admin")

    # An admin action is asked for, then is a call to the admin API: its refusal comes back as the
    # API's message.
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Roll back digits-keras']").click()
    wait(browser).until(visible.visibility_of_element_located((By.ID, "confirm-dialog")))
    assert browser.find_element(By.ID, "confirm-title").text == "Roll back digits-keras"
    browser.find_element(By.ID, "confirm-ok").click()
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
