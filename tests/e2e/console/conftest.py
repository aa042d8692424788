"""Fixtures of the console's browser tests: one ``mdeploy serve --demo`` for the whole folder,
a fresh headless Chromium (Debian's, through its chromedriver) per test, and a screenshot folder.

The demo is shared: a test that needs a deployment in a given state puts it there through the
API first, and leaves the two demo models serving.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service

from core.child_process import spawn
from gateway.process import gateway_command
from tests.e2e.console.browsing import CHROMEDRIVER, CHROMIUM, DEMO_MODELS, WIDE, Demo, track_intervals


@pytest.fixture(scope="package")
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


@pytest.fixture(scope="package")
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
        track_intervals(driver)
        yield driver
    finally:
        driver.quit()
