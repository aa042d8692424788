"""The Try-it form on the model detail page, in a real Chromium against ``mdeploy serve --demo``:
a prediction from the package's samples, its version, request id and latency, and feedback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as visible
from selenium.webdriver.support.select import Select

from tests.e2e.console.browsing import NARROW, NEEDS_CHROMIUM, Demo, severe_entries, shoot, sign_in, wait

pytestmark = NEEDS_CHROMIUM

MODEL = "digits-sklearn"
PREDICTIONS = (
    "return performance.getEntriesByType('resource').filter(e => e.name.includes(':predict')).length"
)

NOT_ADMIN = ("/v1/admin/models", 403)
"""The console asks once whether the key is an admin's: a predict key's answer is a refusal."""
OVERFLOWING = """
const width = document.documentElement.clientWidth;
return [...document.querySelectorAll('#try-section *')]
  .filter((e) => e.getBoundingClientRect().right > width)
  .map((e) => `${e.tagName}#${e.id}`);
"""


def open_try_it(browser: Chrome, demo: Demo, key: str) -> None:
    """Signs in, opens the model's page and waits for the editor to be pre-filled from the samples."""
    sign_in(browser, demo.console, key)
    wait(browser).until(visible.visibility_of_element_located((By.LINK_TEXT, MODEL)))
    browser.get(f"{demo.console}#/models/{MODEL}")
    wait(browser).until(visible.text_to_be_present_in_element((By.ID, "model-title"), MODEL))
    wait(browser).until(lambda d: '"instances"' in body_text(d))
    assert browser.find_element(By.CSS_SELECTOR, "label[for='try-body']").text == "Request body (JSON)"
    assert browser.find_element(By.CSS_SELECTOR, "label[for='try-version']").text == "Version"
    assert "pixels FP32 [-1, 64]" in browser.find_element(By.ID, "try-signature").text


def scroll_to(browser: Chrome, element_id: str, block: str = "center") -> None:
    element = browser.find_element(By.ID, element_id)
    browser.execute_script(f"arguments[0].scrollIntoView({{block: '{block}'}})", element)


def editor(browser: Chrome) -> WebElement:
    return browser.find_element(By.ID, "try-body")


def body_text(browser: Chrome) -> str:
    return str(editor(browser).get_attribute("value"))


def answered(browser: Chrome) -> dict[str, str]:
    """Waits for an answer and reads what the result shows."""
    wait(browser).until(visible.visibility_of_element_located((By.ID, "try-answer")))
    wait(browser).until(lambda d: d.find_element(By.ID, "try-request-id").text)
    return {
        name: browser.find_element(By.ID, f"try-{name}").text
        for name in ("answered-version", "request-id", "latency", "answer", "summary")
    }


def test_an_admin_key_predicts_from_the_samples_and_its_feedback_is_counted(
    demo: Demo, browser: Chrome, screenshots: Path
) -> None:
    open_try_it(browser, demo, demo.admin_key)
    samples = httpx.get(
        f"{demo.url}/v1/models/{MODEL}/samples?rows=3", headers={"Authorization": f"Bearer {demo.admin_key}"}
    ).json()
    assert json.loads(body_text(browser)) == {"instances": samples["instances"]}
    scroll_to(browser, "try-section", "start")
    shoot(browser, screenshots, "try-it-filled")

    # With the keyboard: Ctrl+Enter in the editor sends.
    editor(browser).send_keys(Keys.CONTROL, Keys.ENTER)
    shown = answered(browser)
    assert re.fullmatch(r"v\d+", shown["answered-version"])
    assert re.fullmatch(r"\d+ ms", shown["latency"])
    assert len(json.loads(shown["answer"])["predictions"]) == 3
    assert f"Answered by version {shown['answered-version'][1:]}" in shown["summary"]
    scroll_to(browser, "try-result")
    shoot(browser, screenshots, "try-it-answer")

    reward = browser.find_element(By.ID, "try-reward")
    reward.clear()
    reward.send_keys("0.5")
    browser.find_element(By.ID, "feedback-send").click()
    status = browser.find_element(By.ID, "feedback-status")
    wait(browser).until(lambda d: "Feedback counted" in status.text)
    assert shown["request-id"] in status.text
    scroll_to(browser, "feedback-form")
    shoot(browser, screenshots, "try-it-feedback")
    # Counted once: the API refuses the same request id again.
    again = httpx.post(
        f"{demo.url}/v1/models/{MODEL}/feedback",
        json={"request_id": shown["request-id"], "reward": 0.5},
        headers={"Authorization": f"Bearer {demo.admin_key}"},
    )
    assert again.status_code == 409, again.text

    browser.set_window_size(*NARROW)
    # Every part of the form and the answer fits the narrow screen (long lines scroll inside the editor).
    wait(browser).until(lambda d: d.execute_script(OVERFLOWING) == [])
    browser.execute_script("arguments[0].scrollTo(0, 0)", editor(browser))
    scroll_to(browser, "try-section", "start")
    shoot(browser, screenshots, "try-it-narrow")
    scroll_to(browser, "try-result", "start")
    shoot(browser, screenshots, "try-it-narrow-answer")
    assert severe_entries(browser) == []


def test_a_predict_only_key_predicts_a_named_version_and_is_told_why_feedback_is_refused(
    demo: Demo, browser: Chrome, screenshots: Path, predict_key: str
) -> None:
    open_try_it(browser, demo, predict_key)
    Select(browser.find_element(By.ID, "try-version")).select_by_value("1")
    browser.find_element(By.ID, "try-send").click()
    shown = answered(browser)
    assert shown["answered-version"] == "v1"
    assert re.fullmatch(r"[0-9a-zA-Z_-]{8,}", shown["request-id"]), shown["request-id"]
    assert re.fullmatch(r"\d+ ms", shown["latency"])
    scroll_to(browser, "try-result")
    shoot(browser, screenshots, "try-it-predict-key")

    browser.find_element(By.ID, "feedback-send").click()
    status = browser.find_element(By.ID, "feedback-status")
    wait(browser).until(lambda d: "Feedback not counted (403)" in status.text)
    assert "feedback" in status.text.split("(403):", 1)[1]  # the API's own reason: the scope
    scroll_to(browser, "feedback-form")
    shoot(browser, screenshots, "try-it-predict-key-feedback")
    refused = (f"/v1/models/{MODEL}/feedback", 403)
    assert severe_entries(browser, NOT_ADMIN, refused) == []


def test_a_body_that_is_not_json_is_reported_and_nothing_is_sent(
    demo: Demo, browser: Chrome, screenshots: Path, predict_key: str
) -> None:
    open_try_it(browser, demo, predict_key)
    body = editor(browser)
    body.clear()
    body.send_keys('{"instances": [[1, 2,]]')
    sent = browser.execute_script(PREDICTIONS)
    browser.find_element(By.ID, "try-send").click()
    error = browser.find_element(By.ID, "try-error")
    wait(browser).until(lambda d: "not valid JSON, so nothing was sent" in error.text)
    assert body.get_attribute("aria-invalid") == "true"
    assert browser.switch_to.active_element == body
    assert browser.execute_script(PREDICTIONS) == sent
    assert not browser.find_element(By.ID, "try-result").is_displayed()
    scroll_to(browser, "try-send")
    shoot(browser, screenshots, "try-it-bad-json")

    # Valid JSON the API refuses: its own message is shown.
    body.clear()
    body.send_keys('{"instances": [[1.0]]}')
    browser.find_element(By.ID, "try-send").click()
    wait(browser).until(lambda d: "The gateway refused the prediction (400)" in error.text)
    scroll_to(browser, "try-send")
    shoot(browser, screenshots, "try-it-refused")
    assert severe_entries(browser, NOT_ADMIN, (f"/v1/models/{MODEL}:predict", 400)) == []
