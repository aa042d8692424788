"""HTTP load with ``wrk`` (C, one thread, keep-alive): N connections, each with one request in flight.

wrk is the generator because it is light: on this 2-core machine the generator shares the
cores with what it measures, and a Python generator would spend more CPU per request than a
bare Starlette endpoint does. Its CPU is still measured (``RUSAGE_CHILDREN`` around the run)
and printed next to every row, as are the CPU of the measured processes (``/proc/<pid>/stat``,
all threads) and of the rest of the machine (``/proc/stat`` minus all of those).
"""

from __future__ import annotations

import bisect
import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.common.procstat import machine_busy_s, process_cpu_s, self_cpu_s
from loadtests.server.bench_server import DISTURBED_CORES

SCRIPT = Path(__file__).with_name("wrk_post.lua")
_MARK = "WRK_RESULT "
# Past this a request counts as an error (wrk's default is 2 s; a batching gateway at 64 in
# flight stays far below it, so a timeout means something broke, not a slow tail).
_REQUEST_TIMEOUT = "10s"


@dataclass(frozen=True)
class Target:
    """What wrk loads, and the processes whose CPU a request costs (the server first)."""

    name: str
    url: str
    body: bytes
    headers: Mapping[str, str]
    pids: tuple[int, ...]


@dataclass(frozen=True)
class HttpResult:
    name: str
    concurrency: int
    window_s: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wrk_cpu_s: float
    pid_cpu_s: tuple[float, ...]  # CPU of each of the target's pids over the run
    others_cpu_s: float
    quantiles_ms: tuple[tuple[float, float], ...] = ()
    """(percent, latency ms) on a grid from wrk, finer in the tail: what ``combined`` merges."""

    @property
    def rps(self) -> float:
        return self.requests / self.window_s

    @property
    def tail_ratio(self) -> float:
        return self.p99_ms / self.p50_ms

    @property
    def others_cores(self) -> float:
        return self.others_cpu_s / self.window_s

    def cores(self, cpu_s: float) -> float:
        return cpu_s / self.window_s

    def us_per_request(self, cpu_s: float) -> float:
        return 1e6 * cpu_s / max(self.requests, 1)


def combined(rounds: list[HttpResult]) -> HttpResult:
    """Rounds of one target as one result: counts and CPU added up, percentiles of the rounds'
    latency distributions merged (each weighted by its requests)."""
    first = rounds[0]
    total = sum(r.requests for r in rounds)

    # Every latency on any round's grid, with the share of all requests at or under it.
    shares = [
        (ms, sum(r.requests * _fraction_at_most(r.quantiles_ms, ms) for r in rounds) / total)
        for ms in sorted({ms for r in rounds for _, ms in r.quantiles_ms})
    ]

    def percentile(percent: float) -> float:
        # The smallest latency at or under which ``percent`` of all rounds' requests fall.
        return next((ms for ms, share in shares if share >= percent / 100 * (1 - 1e-9)), shares[-1][0])

    return HttpResult(
        first.name,
        first.concurrency,
        sum(r.window_s for r in rounds),
        total,
        sum(r.errors for r in rounds),
        percentile(50),
        percentile(90),
        percentile(99),
        max(r.max_ms for r in rounds),
        sum(r.wrk_cpu_s for r in rounds),
        tuple(sum(cpu) for cpu in zip(*(r.pid_cpu_s for r in rounds), strict=True)),
        sum(r.others_cpu_s for r in rounds),
    )


def _fraction_at_most(quantiles: tuple[tuple[float, float], ...], ms: float) -> float:
    """The fraction of a run's requests at or under ``ms``, read off its quantile grid."""
    values = [value for _, value in quantiles]
    at = bisect.bisect_right(values, ms)
    if at == len(values):
        return 1.0
    below_percent, below_ms = quantiles[at - 1] if at else (0.0, 0.0)
    above_percent, above_ms = quantiles[at]
    share = (ms - below_ms) / (above_ms - below_ms) if above_ms > below_ms else 0.0
    return (below_percent + share * (above_percent - below_percent)) / 100


@dataclass(frozen=True)
class _CpuSnapshot:
    children_s: float  # waited-for children: after subprocess.run returns, that includes wrk
    pids_s: tuple[float, ...]
    machine_s: float
    self_s: float

    @classmethod
    def take(cls, pids: tuple[int, ...]) -> _CpuSnapshot:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            children.ru_utime + children.ru_stime,
            tuple(process_cpu_s(pid) for pid in pids),
            machine_busy_s(),
            self_cpu_s(),
        )


def check_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: `make system-deps` (Debian package wrk)")
    return path


def load(target: Target, concurrency: int, duration_s: int, warmup_s: int, quiet_wait_s: float) -> HttpResult:
    """Warm up, measure; if other work disturbed the window, wait for quiet and measure once more."""
    if warmup_s > 0:
        run_wrk(target, concurrency, warmup_s)
    first = run_wrk(target, concurrency, duration_s)
    if first.others_cores <= DISTURBED_CORES:
        return first
    wait_for_quiet(quiet_wait_s)
    second = run_wrk(target, concurrency, duration_s)
    return min(first, second, key=lambda r: r.others_cores)


@dataclass(frozen=True)
class Quiet:
    """The machine before a measurement: other processes' cores, how long we waited."""

    others_cores: float
    waited_s: float
    load_average: str


def wait_for_quiet(max_wait_s: float) -> Quiet:
    """Other processes' CPU over 1 s, sampled until it is low or ``max_wait_s`` has passed."""
    waited = 0.0
    while True:
        cores = _others_cores(1.0)
        if cores <= DISTURBED_CORES or waited >= max_wait_s:
            load_average = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            return Quiet(cores, waited, load_average)
        if waited == 0.0:
            print(f"other processes use {cores:.2f} cores; waiting up to {max_wait_s:g} s for quiet...")
        waited += 1.0


def _others_cores(window_s: float) -> float:
    busy, own = machine_busy_s(), self_cpu_s()
    time.sleep(window_s)
    return max(machine_busy_s() - busy - (self_cpu_s() - own), 0.0) / window_s


def run_wrk(target: Target, concurrency: int, duration_s: int) -> HttpResult:
    """One wrk process for ``duration_s`` (whole seconds: wrk's -d takes no fractions)."""
    command = [
        check_wrk(),
        "-t1",  # one thread keeps up with every endpoint here and leaves the cores to the servers
        f"-c{concurrency}",
        f"-d{duration_s}s",
        f"--timeout={_REQUEST_TIMEOUT}",
        f"-s{SCRIPT}",
        target.url,
    ]
    headers = "\n".join(f"{name}: {value}" for name, value in target.headers.items())
    env = {**os.environ, "WRK_BODY": target.body.decode(), "WRK_HEADERS": headers}
    before = _CpuSnapshot.take(target.pids)
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    after = _CpuSnapshot.take(target.pids)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    return _result(target, concurrency, _parse(done.stdout), before, after)


def _parse(stdout: str) -> dict[str, Any]:
    line = next((ln for ln in stdout.splitlines() if ln.startswith(_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary line:\n{stdout}")
    parsed: dict[str, Any] = json.loads(line.removeprefix(_MARK))
    return parsed


def _result(
    target: Target, concurrency: int, summary: dict[str, Any], before: _CpuSnapshot, after: _CpuSnapshot
) -> HttpResult:
    wrk_s = after.children_s - before.children_s
    pids_s = tuple(b - a for a, b in zip(before.pids_s, after.pids_s, strict=True))
    ours = wrk_s + sum(pids_s) + after.self_s - before.self_s
    errors = sum(int(summary[k]) for k in ("connect", "read", "write", "status", "timeout"))
    return HttpResult(
        target.name,
        concurrency,
        summary["duration_us"] / 1e6,
        int(summary["requests"]),
        errors,
        summary["p50_us"] / 1e3,
        summary["p90_us"] / 1e3,
        summary["p99_us"] / 1e3,
        summary["max_us"] / 1e3,
        wrk_s,
        pids_s,
        max(after.machine_s - before.machine_s - ours, 0.0),
        tuple((percent, us / 1e3) for percent, us in summary.get("quantiles_us", [])),
    )
