"""What an open console costs the gateway: one real headless Chromium, signed in with an admin key.

The console polls while its page is visible (the model detail page: the series every 5 s, drift
every 30 s; the models page: the at-a-glance numbers every 10 s). Two measurements, both of the
gateway process's CPU (``/proc/<pid>/stat``, all threads):

- **idle**: the gateway with no load, with the console on a page and then on ``about:blank``,
  in alternating windows, for each of the two pages. The mean difference of the pairs is what
  the polling costs in CPU seconds per second; its upper bound (mean + 2 standard errors: the
  idle gateway's own timers make noise of the same size) over the gateway's CPU per second at
  the top concurrency is the share the target bounds (under 2%).
- **loaded**: rounds at the top concurrency with and without the detail page open, alternating;
  the gateway's CPU per request on each side. The console adds well under a percent here, so
  this row mostly shows the rounds' noise; it is printed as the direct check.

Runs after the gateway benchmark's rows, so the series buckets it reads hold their traffic.
"""

from __future__ import annotations

import math
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.common.procstat import process_cpu_s
from loadtests.gateway.httpload import HttpResult, combined

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CONSOLE_CPU_SHARE = 0.02  # the bound: under 2% of the gateway's CPU at the top concurrency
IDLE_WINDOW_S = 10.0
IDLE_ROUNDS = 6


@dataclass(frozen=True)
class IdlePage:
    page: str
    open_cores: tuple[float, ...]  # gateway CPU seconds per second per window, the page open
    closed_cores: tuple[float, ...]  # the same with the tab on about:blank, the window after
    calls_per_s: float  # API calls the open page made per second (Resource Timing)

    @property
    def differences(self) -> list[float]:
        return [o - c for o, c in zip(self.open_cores, self.closed_cores, strict=True)]

    @property
    def polling_cores(self) -> float:
        """The mean of open minus closed over the paired windows (may read below 0: noise)."""
        return statistics.fmean(self.differences)

    @property
    def standard_error(self) -> float:
        return statistics.stdev(self.differences) / math.sqrt(len(self.differences))

    @property
    def bound_cores(self) -> float:
        """What the polling costs at most, at about 97.5% confidence: the idle gateway's own
        timers move its CPU by more than one console's few calls do."""
        return max(self.polling_cores + 2 * self.standard_error, 0.0)


@dataclass(frozen=True)
class ConsoleCost:
    idle: list[IdlePage]
    idle_window_s: float
    loaded_page: str
    loaded_open: HttpResult  # rounds at the top concurrency with the console open
    loaded_closed: HttpResult

    @property
    def gateway_cores(self) -> float:
        return self.loaded_closed.cores(self.loaded_closed.pid_cpu_s[0])

    def share(self, page: IdlePage) -> float:
        """The bound on the page's polling CPU over the gateway's CPU at the top concurrency."""
        return page.bound_cores / max(self.gateway_cores, 1e-9)

    @property
    def loaded_change(self) -> float:
        """Gateway CPU per request with the console open over without, minus one."""
        open_us = self.loaded_open.us_per_request(self.loaded_open.pid_cpu_s[0])
        closed_us = self.loaded_closed.us_per_request(self.loaded_closed.pid_cpu_s[0])
        return open_us / closed_us - 1


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists() and shutil.which("chromium") is not None


@contextmanager
def open_browser() -> Iterator[Any]:
    """Headless Debian Chromium through its chromedriver (as tests/e2e/console does)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver: Any, url: str, admin_key: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as visible
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(f"{url}/console/")
    field = WebDriverWait(driver, 30).until(visible.visibility_of_element_located((By.ID, "api-key")))
    field.send_keys(admin_key + "\n")
    WebDriverWait(driver, 30).until(visible.visibility_of_element_located((By.ID, "models-page")))


def open_detail(driver: Any, url: str, model: str) -> None:
    """The model's detail page, its charts drawn: the console's busiest page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(f"{url}/console/#/models/{model}")
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-requests canvas"))


def open_models(driver: Any, url: str, model: str) -> None:
    """The models page, its rows listed (it refreshes the at-a-glance numbers)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(f"{url}/console/#/models")
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#models-table tbody tr"))


PAGES: dict[str, Callable[[Any, str, str], None]] = {"model detail": open_detail, "models": open_models}


def close_page(driver: Any) -> None:
    # about:blank keeps the browser (and its CPU use) but stops every timer of the console.
    driver.get("about:blank")


def api_calls(driver: Any) -> int:
    script = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/v')).length"
    return int(driver.execute_script(script))


def _idle_cores(pid: int, window_s: float) -> float:
    before, started = process_cpu_s(pid), time.perf_counter()
    time.sleep(window_s)  # the measurement window itself: nothing to wait for, only time to count
    return (process_cpu_s(pid) - before) / (time.perf_counter() - started)


def measure(
    url: str,
    admin_key: str,
    model: str,
    gateway_pid: int,
    load_round: Callable[[], HttpResult],
    rounds: int,
    idle_window_s: float = IDLE_WINDOW_S,
) -> ConsoleCost:
    """One console: idle windows on each page, then loaded rounds on the detail page, each
    alternating open and closed so a drift of machine speed touches both sides alike."""
    with open_browser() as driver:
        sign_in(driver, url, admin_key)
        idle = [_idle_page(driver, url, model, gateway_pid, page, idle_window_s) for page in PAGES]
        opened: list[HttpResult] = []
        closed: list[HttpResult] = []
        for _ in range(rounds):
            open_detail(driver, url, model)
            opened.append(load_round())
            close_page(driver)
            closed.append(load_round())
    return ConsoleCost(idle, idle_window_s, "model detail", combined(opened), combined(closed))


def _idle_page(driver: Any, url: str, model: str, gateway_pid: int, page: str, window_s: float) -> IdlePage:
    open_cores: list[float] = []
    closed_cores: list[float] = []
    calls, open_s = 0, 0.0
    for _ in range(IDLE_ROUNDS):
        PAGES[page](driver, url, model)
        first = api_calls(driver)
        started = time.perf_counter()
        open_cores.append(_idle_cores(gateway_pid, window_s))
        calls += api_calls(driver) - first
        open_s += time.perf_counter() - started
        close_page(driver)
        closed_cores.append(_idle_cores(gateway_pid, window_s))
    return IdlePage(page, tuple(open_cores), tuple(closed_cores), calls / open_s)


def render(cost: ConsoleCost, top: int) -> None:
    from rich.console import Console

    from loadtests.common import tables

    table = tables.table("An open console (admin key, real headless Chromium)", ("measured", "value"), 1)
    for page in cost.idle:
        table.add_row(
            f"gateway CPU, idle, {page.page} page, {IDLE_ROUNDS} x {cost.idle_window_s:.0f} s each side",
            f"open {1000 * statistics.fmean(page.open_cores):.1f} ms/s, closed "
            f"{1000 * statistics.fmean(page.closed_cores):.1f} ms/s; difference "
            f"{1000 * page.polling_cores:+.2f} ± {1000 * page.standard_error:.2f} ms/s; "
            f"{page.calls_per_s:.2f} API calls/s",
        )
    closed, opened = cost.loaded_closed, cost.loaded_open
    table.add_row(
        f"gateway CPU at {top} in flight, console closed",
        f"{cost.gateway_cores:.2f} cores, {closed.us_per_request(closed.pid_cpu_s[0]):.1f} µs/request",
    )
    table.add_row(
        f"gateway CPU at {top} in flight, {cost.loaded_page} page open",
        f"{opened.cores(opened.pid_cpu_s[0]):.2f} cores, {opened.us_per_request(opened.pid_cpu_s[0]):.1f} "
        f"µs/request ({cost.loaded_change:+.1%}: mostly the rounds' noise)",
    )
    targets = tables.table("Target of the console", ("target", "measured", "needed", "result"), 4)
    for page in cost.idle:
        share = cost.share(page)
        targets.add_row(
            f"{page.page} page polling's share of gateway CPU at {top} in flight (upper bound)",
            f"{1000 * page.bound_cores:.2f} ms/s / {cost.gateway_cores:.2f} cores = {share:.2%}",
            f"< {CONSOLE_CPU_SHARE:.0%}",
            tables.verdict(share < CONSOLE_CPU_SHARE),
        )
    console = Console()
    console.print(table)
    console.print(targets)
