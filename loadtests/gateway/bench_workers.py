"""Gateway workers benchmark: req/s with 1 and 2 gateway processes next to bare Starlette with 1
and 2 uvicorn workers, in one run, and the scaling ratio (2 workers / 1 worker) of each.

Targets, all up for the whole run, loaded by ``wrk`` (``loadtests.gateway.httpload``) at each
concurrency in alternating rounds (3 of 3 s by default, added up per target), so a change of
machine speed during the run touches every target alike:

1. bare Starlette (``loadtests.gateway.bare_http``), 1 uvicorn process;
2. the same with ``--workers 2`` (uvicorn's parent binds one socket its 2 workers share);
3. ``mdeploy serve`` (1 process) with rate limits in Redis, digits-sklearn pushed, its own
   ``mdeploy-server``;
4. ``mdeploy serve --workers 2``, the same (several workers need shared limits: Redis);
5. ``mdeploy serve`` with in-memory limits: what one process runs without Redis.

Every request is the 1-row v1 ``:predict`` that ``bench_gateway`` sends. The load generator
shares the machine's cores with what it measures (this machine has 2): its CPU is printed next
to every row, as are the workers' CPU and, for the gateway, the inference server's and Redis's.

Run: ``python -m loadtests.gateway.bench_workers [--quick] [--rounds N] [--round-s S] [--concurrency ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

from core.ports import free_port
from gateway.process import GatewayProcess, start_gateway_process
from loadtests.common import tables
from loadtests.gateway import httpload
from loadtests.gateway.bare_http import bare_http
from loadtests.gateway.bench_gateway import digit_row, v1_body
from loadtests.gateway.httpload import HttpResult, Target
from loadtests.gateway.stack import MODEL, GatewayStarter, Stack, build_packages, running_stack
from loadtests.server.bench_server import DISTURBED_CORES


@dataclass(frozen=True)
class Measured:
    """A target, and how many of its pids (first) are the HTTP processes; the rest serve behind."""

    target: Target
    front: int
    workers: int
    kind: str  # "bare" or "gateway"


@dataclass(frozen=True)
class Row:
    measured: Measured
    result: HttpResult

    @property
    def front_cores(self) -> float:
        return self.result.cores(sum(self.result.pid_cpu_s[: self.measured.front]))

    @property
    def back_cores(self) -> float:
        return self.result.cores(sum(self.result.pid_cpu_s[self.measured.front :]))


def descendants(pid: int) -> list[int]:
    """``pid``'s children, theirs, and so on (uvicorn's and mdeploy's workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = [int(child) for child in children]
    return found + [grandchild for child in found for grandchild in descendants(child)]


def wait_for_children(pid: int, count: int, timeout_s: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while len(children := descendants(pid)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} has {len(children)} children, not {count}")
        time.sleep(0.1)
    return children


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """A throwaway redis-server on loopback (no persistence): its URL and pid."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start (Debian package redis-server)")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False


def workers_starter(count: int) -> GatewayStarter:
    def start(data_dir: Path, backends: list[str], env: dict[str, str]) -> GatewayProcess:
        return start_gateway_process(data_dir, backends, env=env, extra_args=["--workers", str(count)])

    return start


def all_workers_serve(stack: Stack, body: bytes) -> None:
    """Fresh connections (spread over the workers) until 20 in a row answer: every worker has
    read the push (within ``deployment_refresh_s``)."""
    headers = {"Authorization": f"Bearer {stack.key}", "content-type": "application/json"}
    url = f"{stack.url}/v1/models/{MODEL}:predict"
    deadline, streak = time.monotonic() + 30, 0
    while streak < 20:
        status = httpx.post(url, content=body, headers=headers, timeout=10).status_code
        streak = streak + 1 if status == 200 else 0
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway's workers do not all answer: last status {status}")


def gateway_measured(name: str, stack: Stack, body: bytes, workers: int, redis_pid: int | None) -> Measured:
    front = [stack.gateway_pid] if workers == 1 else [stack.gateway_pid, *descendants(stack.gateway_pid)]
    behind = [stack.server_pid] + ([redis_pid] if redis_pid is not None else [])
    all_workers_serve(stack, body)
    headers = {"Authorization": f"Bearer {stack.key}"}
    url = f"{stack.url}/v1/models/{MODEL}:predict"
    return Measured(Target(name, url, body, headers, (*front, *behind)), len(front), workers, "gateway")


@dataclass(frozen=True)
class Plan:
    levels: tuple[int, ...]
    rounds: int
    round_s: int
    warmup_s: int
    quiet_wait_s: float


def measure(targets: list[Measured], plan: Plan) -> list[Row]:
    rows = []
    for concurrency in plan.levels:
        rounds: dict[str, list[HttpResult]] = {m.target.name: [] for m in targets}
        for _ in range(plan.rounds):
            for measured in targets:
                result = httpload.load(
                    measured.target, concurrency, plan.round_s, plan.warmup_s, plan.quiet_wait_s
                )
                rounds[measured.target.name].append(result)
        rows += [Row(m, httpload.combined(rounds[m.target.name])) for m in targets]
    return rows


def render(rows: list[Row], plan: Plan, quiet: httpload.Quiet) -> None:
    console = Console(width=None if sys.stdout.isatty() else 220, highlight=False)
    cpu = next((ln.split(":", 1)[1].strip() for ln in tables.cpu_info() if ln.startswith("model name")), "?")
    console.print(
        f"[bold]mdeploy gateway workers[/] — {os.cpu_count()} CPU cores ({cpu}), Python "
        f"{platform.python_version()}; wrk, 1 thread, on the SAME cores as the servers; {plan.rounds} "
        f"alternating rounds of {plan.round_s} s per row after {plan.warmup_s} s of warm-up each; "
        f"127.0.0.1. Before measuring: load average {quiet.load_average}, other processes "
        f"{quiet.others_cores:.2f} cores. 'others' over {DISTURBED_CORES:g} cores (*): measured twice, "
        "least disturbed kept."
    )
    columns = (
        "target",
        "workers",
        "in flight",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "HTTP workers cores",
        "server + redis cores",
        "wrk cores",
        "others",
    )
    shown = tables.table("HTTP under load (wrk, closed loop: N connections, one request each)", columns, 1)
    for row in rows:
        r = row.result
        shown.add_row(
            r.name,
            str(row.measured.workers),
            str(r.concurrency),
            f"{r.rps:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            str(r.errors),
            f"{row.front_cores:.2f}",
            f"{row.back_cores:.2f}" if row.measured.kind == "gateway" else "—",
            f"{r.cores(r.wrk_cpu_s):.2f}",
            f"{r.others_cores:.2f}" + (" *" if r.others_cores > DISTURBED_CORES else ""),
        )
    console.print(shown)
    ratios = tables.table(
        "Scaling: req/s with 2 workers / with 1",
        ("in flight", "bare Starlette", "gateway (Redis limits)", "gateway 2 workers / 1 in-memory"),
        1,
    )
    for concurrency in plan.levels:
        at = {r.result.name: r.result for r in rows if r.result.concurrency == concurrency}
        bare = at["bare 2 workers"].rps / at["bare 1 worker"].rps
        gateway = at["gateway 2 workers"].rps / at["gateway 1 worker"].rps
        memory = at["gateway 2 workers"].rps / at["gateway 1 worker, memory"].rps
        ratios.add_row(str(concurrency), f"{bare:.2f}x", f"{gateway:.2f}x", f"{memory:.2f}x")
    console.print(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_workers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per row (default 3)")
    parser.add_argument("--round-s", type=int, default=3, help="whole seconds per round (default 3)")
    parser.add_argument("--quick", action="store_true", help="one round of 2 s per row: a smoke run")
    args = parser.parse_args(argv)
    levels = tuple(sorted(set(args.concurrency)))
    plan = Plan(levels, 1, 2, 1, 3.0) if args.quick else Plan(levels, args.rounds, args.round_s, 1, 30.0)
    httpload.check_wrk()
    started = time.perf_counter()
    body = v1_body(digit_row())
    with tempfile.TemporaryDirectory(prefix="mdeploy-bench-workers-") as folder, contextlib.ExitStack() as up:
        work = Path(folder)
        packages = build_packages(work / "packages", [MODEL])
        redis_url, redis_pid = up.enter_context(redis_server())
        shared = {"MDEPLOY_RATE_LIMIT_STORAGE": redis_url}
        one = up.enter_context(running_stack(work / "one", packages, shared))
        two = up.enter_context(running_stack(work / "two", packages, shared, workers_starter(2)))
        memory = up.enter_context(running_stack(work / "memory", packages))
        bare_one = up.enter_context(bare_http())
        bare_two = up.enter_context(bare_http(workers=2))
        bare_two_pids = [bare_two.pid, *wait_for_children(bare_two.pid, 2)]
        url = f"/v1/models/{MODEL}:predict"
        headers = {"Authorization": f"Bearer {one.key}"}  # the bare endpoint ignores it: same bytes
        targets = [
            Measured(
                Target("bare 1 worker", bare_one.url + url, body, headers, (bare_one.pid,)), 1, 1, "bare"
            ),
            Measured(
                Target("bare 2 workers", bare_two.url + url, body, headers, tuple(bare_two_pids)),
                len(bare_two_pids),
                2,
                "bare",
            ),
            gateway_measured("gateway 1 worker", one, body, 1, redis_pid),
            gateway_measured("gateway 2 workers", two, body, 2, redis_pid),
            gateway_measured("gateway 1 worker, memory", memory, body, 1, None),
        ]
        quiet = httpload.wait_for_quiet(plan.quiet_wait_s)
        rows = measure(targets, plan)
    render(rows, plan, quiet)
    print(f"total run time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
