"""The console's keys page in a real Chromium against ``mdeploy serve --demo``: list, create (the
secret shown once and kept nowhere), revoke behind a confirmation, and refusal for other keys."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import httpx
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as visible

from tests.e2e.console.browsing import (
    NARROW,
    NEEDS_CHROMIUM,
    Demo,
    model_rows,
    severe_entries,
    shoot,
    sign_in,
    wait,
)

pytestmark = NEEDS_CHROMIUM

KEY_FORMAT = re.compile(r"^mdk_([0-9a-f]{16})_[A-Za-z0-9]{43}$")


def models_status(demo: Demo, key: str) -> int:
    return httpx.get(f"{demo.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


def key_row(browser: Chrome, key_id: str) -> WebElement:
    selector = f"#keys-table tbody tr[data-key-id='{key_id}']"
    return wait(browser).until(visible.visibility_of_element_located((By.CSS_SELECTOR, selector)))


def key_status(browser: Chrome, key_id: str) -> str:
    return str(key_row(browser, key_id).find_element(By.CSS_SELECTOR, "td[data-label='Status'] span").text)


def stored_anywhere(browser: Chrome) -> str:
    """Everything the page could have kept: both storages, cookies and the address."""
    storages = browser.execute_script(
        "return JSON.stringify("
        "[Object.entries(sessionStorage), Object.entries(localStorage), document.cookie])"
    )
    return f"{storages} {json.dumps(browser.get_cookies())} {browser.current_url}"


def open_keys_page(browser: Chrome) -> None:
    link = wait(browser).until(visible.visibility_of_element_located((By.LINK_TEXT, "Keys")))
    link.send_keys(Keys.ENTER)
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "keys-status"), "active"))
    assert link.get_attribute("aria-current") == "page"
    assert browser.current_url.endswith("#/keys")


def test_admin_creates_a_predict_only_key_sees_its_secret_once_and_revokes_it_after_confirming(
    demo: Demo, browser: Chrome, screenshots: Path
) -> None:
    sign_in(browser, demo.console, demo.admin_key)
    model_rows(browser, 2)
    open_keys_page(browser)
    own_id = KEY_FORMAT.fullmatch(demo.admin_key)
    assert own_id is not None
    own = key_row(browser, own_id.group(1))
    assert "you are signed in with this key" in own.text
    assert own.find_elements(By.TAG_NAME, "button") == []
    shoot(browser, screenshots, "keys-page")
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "keys-list-title"))
    shoot(browser, screenshots, "keys-list")

    # A refusal shows the API's own message: a key needs a scope.
    predict = browser.find_element(By.CSS_SELECTOR, "#new-key-form input[value='predict']")
    predict.send_keys(Keys.SPACE)
    browser.find_element(By.ID, "new-key-create").send_keys(Keys.ENTER)
    wait(browser).until(
        visible.text_to_be_present_in_element((By.ID, "new-key-status"), "a key needs at least one scope")
    )
    assert browser.find_element(By.ID, "new-key-status").get_attribute("class") == "error"
    predict.send_keys(Keys.SPACE)

    # Created from the form with the keyboard: a name, the predict scope alone, Enter.
    name = f"e2e-keys-{secrets.token_hex(3)}"
    scopes = browser.find_elements(By.CSS_SELECTOR, "#new-key-form input[name='scope']")
    assert {box.get_attribute("value"): box.is_selected() for box in scopes} == {
        "predict": True,
        "feedback": False,
        "admin": False,
    }
    field = browser.find_element(By.ID, "new-key-name")
    assert browser.find_element(By.CSS_SELECTOR, "label[for='new-key-name']").text == "Name"
    field.send_keys(name, Keys.ENTER)
    box = wait(browser).until(visible.visibility_of_element_located((By.ID, "secret-box")))
    assert "only time" in box.text
    secret = browser.find_element(By.ID, "secret-value").text
    created = KEY_FORMAT.fullmatch(secret)
    assert created is not None, secret
    key_id = created.group(1)
    assert browser.switch_to.active_element.get_attribute("id") == "secret-title"
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "new-key-status"), name))
    browser.find_element(By.ID, "secret-copy").click()
    copied = wait(browser).until(lambda d: d.find_element(By.ID, "secret-copy-status").text)
    assert copied == "Copied to the clipboard." or "the key is selected" in copied
    shoot(browser, screenshots, "keys-secret-shown")

    # The secret works against the API, for what its scope allows.
    assert models_status(demo, secret) == 200
    admin_list = httpx.get(f"{demo.url}/v1/admin/keys", headers={"Authorization": f"Bearer {secret}"})
    assert admin_list.status_code == 403
    # The list shows the key without its secret; nothing keeps the secret.
    row = key_row(browser, key_id)
    assert name in row.text
    assert key_id in row.text
    assert secret.split("_")[2] not in row.text
    assert row.find_element(By.CSS_SELECTOR, "td[data-label='Scopes']").text == "predict"
    assert key_status(browser, key_id) == "active"
    assert secret not in stored_anywhere(browser)

    # Leaving the page forgets the secret; coming back does not show it again.
    browser.find_element(By.LINK_TEXT, "Models").send_keys(Keys.ENTER)
    model_rows(browser, 2)
    assert secret not in str(browser.page_source)
    open_keys_page(browser)
    key_row(browser, key_id)
    assert not browser.find_element(By.ID, "secret-box").is_displayed()
    assert secret not in str(browser.page_source)
    assert secret not in stored_anywhere(browser)

    # Cancel in the dialog (it has the focus first, so Enter cancels) changes nothing.
    key_row(browser, key_id).find_element(By.TAG_NAME, "button").send_keys(Keys.ENTER)
    dialog = wait(browser).until(visible.visibility_of_element_located((By.ID, "confirm-dialog")))
    assert name in dialog.text
    assert "cannot be undone" in dialog.text
    shoot(browser, screenshots, "keys-revoke-dialog")
    assert browser.switch_to.active_element.get_attribute("id") == "confirm-cancel"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser).until(visible.invisibility_of_element_located((By.ID, "confirm-dialog")))
    wait(browser).until(
        visible.text_to_be_present_in_element((By.ID, "keys-action-status"), "nothing was revoked")
    )
    assert key_status(browser, key_id) == "active"
    assert models_status(demo, secret) == 200

    # Confirmed, the key is revoked: the API refuses it at once.
    key_row(browser, key_id).find_element(By.TAG_NAME, "button").click()
    wait(browser).until(visible.element_to_be_clickable((By.ID, "confirm-ok"))).click()
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "keys-action-status"), "Revoked key"))
    wait(browser).until(lambda d: key_status(d, key_id) == "revoked")
    assert key_row(browser, key_id).find_elements(By.TAG_NAME, "button") == []
    assert models_status(demo, secret) == 401
    browser.execute_script("arguments[0].scrollIntoView()", key_row(browser, key_id))
    shoot(browser, screenshots, "keys-revoked")

    browser.set_window_size(*NARROW)
    wait(browser).until(
        lambda d: (
            d.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            <= 0
        )
    )
    browser.execute_script("window.scrollTo(0, 0)")
    shoot(browser, screenshots, "keys-narrow")
    browser.execute_script("arguments[0].scrollIntoView()", key_row(browser, key_id))
    shoot(browser, screenshots, "keys-narrow-list")
    assert severe_entries(browser, ("/v1/admin/keys", 400)) == []


def test_a_key_without_admin_sees_no_keys_link_and_is_told_the_page_needs_an_admin_key(
    demo: Demo, browser: Chrome, screenshots: Path, predict_key: str
) -> None:
    sign_in(browser, demo.console, predict_key)
    model_rows(browser, 2)
    assert not browser.find_element(By.CSS_SELECTOR, "#site-nav a[href='#/keys']").is_displayed()

    browser.execute_script("location.hash = '#/keys'")
    denied = wait(browser).until(visible.visibility_of_element_located((By.ID, "keys-denied")))
    assert "This page needs an admin key." in denied.text
    assert "The gateway answered:" in denied.text
    assert not browser.find_element(By.ID, "keys-admin").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#keys-table tbody tr") == []
    assert not browser.find_element(By.CSS_SELECTOR, "#site-nav a[href='#/keys']").is_displayed()
    shoot(browser, screenshots, "keys-denied")
    assert severe_entries(browser, ("/v1/admin/models", 403), ("/v1/admin/keys", 403)) == []
