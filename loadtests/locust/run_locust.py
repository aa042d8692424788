"""One command for the JSON API's locust test: server + gateway + demo models + key, then locust.

Starts ``mdeploy-server`` and ``mdeploy serve`` on 127.0.0.1 (rate limits raised out of the way),
pushes both digits demo models through the admin API, makes a predict-scope key, and runs
``loadtests/locust/locustfile.py`` headless for a bounded time against both models; locust prints its
summary (requests, failures, latency percentiles per API format). The exit code is locust's:
1 when any request failed.

Run: ``python -m loadtests.locust.run_locust [--users 16] [--spawn-rate 16] [--run-time 30]``.
Locust is one process on one core: on a 2-core machine it, not the gateway, may be the limit,
so its CPU is printed too (``bench_gateway`` measures throughput with wrk).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtests.gateway.stack import ALL_MODELS, build_packages, running_stack

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# Locust's own start and its summary take seconds; past this margin something hangs.
MARGIN_S = 60


def locust_command(url: str, users: int, spawn_rate: int, run_time_s: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        f"--locustfile={LOCUSTFILE}",
        "--headless",
        f"--users={users}",
        f"--spawn-rate={spawn_rate}",
        f"--run-time={run_time_s}s",
        f"--host={url}",
        "--only-summary",  # the final table, not one every few seconds
        "--stop-timeout=5",
    ]


def run_locust(url: str, key: str, admin_key: str, args: argparse.Namespace) -> int:
    # The load runs with a predict key; the admin key only pulls each model's samples first.
    env = {
        **os.environ,
        "MDEPLOY_API_KEY": key,
        "MDEPLOY_ADMIN_KEY": admin_key,
        "MDEPLOY_MODELS": ",".join(ALL_MODELS),
    }
    command = locust_command(url, args.users, args.spawn_rate, args.run_time)
    before = _children_cpu_s()
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, timeout=args.run_time + MARGIN_S, check=False)
    except subprocess.TimeoutExpired:
        print(f"locust did not finish within {args.run_time + MARGIN_S} s; stopped", file=sys.stderr)
        return 1
    elapsed, cpu = time.perf_counter() - started, _children_cpu_s() - before
    print(f"locust process: {cpu:.1f} s CPU over {elapsed:.0f} s ({cpu / elapsed:.0%} of one core)")
    return done.returncode


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_locust", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--users", "-u", type=int, default=16, help="concurrent users (default 16)")
    add("--spawn-rate", "-r", type=int, help="users started per second (default: all at once)")
    add("--run-time", "-t", type=int, default=30, help="seconds of load (default 30)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.spawn_rate = args.spawn_rate or args.users
    with tempfile.TemporaryDirectory(prefix="mdeploy-locust-") as folder:
        print("building the demo packages (~10 s)...", flush=True)
        packages = build_packages(Path(folder) / "packages", ALL_MODELS)
        with running_stack(Path(folder), packages) as stack:
            print(f"gateway {stack.url} serving {', '.join(stack.versions)}; running locust...", flush=True)
            return run_locust(stack.url, stack.key, stack.admin_key, args)


if __name__ == "__main__":
    sys.exit(main())
