"""Soak test: locust against a real gateway for minutes, with a rollback every minute.

Starts ``mdeploy-server`` and ``mdeploy serve`` on 127.0.0.1, pushes two versions of the digits
scikit-learn model, rolls out a Thompson-sampling bandit between them, and runs locust headless
(``loadtests/locust/soak_users.py``: v1 rows, v1 columns and v2 predictions, feedback on half of them).
Every ``--rollback-every`` seconds the deployment changes: a rollback to the stable version,
then, half a period later, the bandit again. At the end it prints a summary and checks:
zero failed requests, and gateway and server memory (RSS) growth under ``--max-growth``
(measured from the end of the warm-up, so one-time allocations do not count).

Run: ``python -m loadtests.locust.soak [--duration 600] [--users 16] [--rollback-every 60]``
(the full soak: 10 minutes). Exit code 0 when every check passes.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.server_process import start_server_process
from gateway.auth.keys import with_keys
from gateway.process import GatewayProcess, start_gateway_process
from gateway.settings import GatewaySettings
from mdeploy.client import ClientConfig, GatewayClient
from modelpkg.builder import build

MODEL = "digits-sklearn"

ENV = {
    "MDEPLOY_RATE_LIMIT_PREDICT": "100000000/minute",
    "MDEPLOY_RATE_LIMIT_FEEDBACK": "100000000/minute",
    "MDEPLOY_RATE_LIMIT_ADMIN": "100000/minute",
}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def build_versions(folder: Path) -> list[Path]:
    """Two packages of one model (two digests): the arms of the bandit."""
    from examples.digits import load_data, train_sklearn  # trains only when run

    data = load_data()
    pipeline = train_sklearn(data)
    samples = data.x_test[:8]
    return [
        build(
            pipeline,
            folder / f"digits-{arm}.pkg",
            name=MODEL,
            samples=samples,
            input_names=["pixels"],
            output_names=["label", "probabilities"],
            description=f"soak arm {arm}",
            code_dir=None,
        ).path
        for arm in ("a", "b")
    ]


@dataclass
class Admin:
    gateway: GatewayProcess

    def client(self) -> GatewayClient:
        config = ClientConfig(self.gateway.url, self.gateway.admin_key)
        return GatewayClient(config, timeout=httpx.Timeout(120))

    def call(self, method: str, path: str, body: object | None = None) -> httpx.Response:
        with self.client() as client:
            return client.request(method, path, json=body)

    def push(self, package: Path) -> str:
        with self.client() as client:
            return str(client.push(package)["version"])


def change_deployments(
    admin: Admin, versions: list[str], period_s: float, stop: threading.Event
) -> list[str]:
    """Rollback, then the bandit again, each period until ``stop``; what was done."""
    done: list[str] = []
    bandit = {"policy": {"kind": "thompson", "versions": versions}, "reason": "soak"}
    while not stop.wait(period_s / 2):
        admin.call("POST", f"/v1/admin/deployments/{MODEL}/rollback", {"reason": "soak: scheduled rollback"})
        done.append("rollback")
        if stop.wait(period_s / 2):
            break
        admin.call("PUT", f"/v1/admin/deployments/{MODEL}", bandit)
        done.append("rollout")
    return done


def run_locust(url: str, key: str, users: int, duration_s: int, csv_prefix: Path) -> int:
    command = [
        sys.executable,
        "-m",
        "locust",
        f"--locustfile={Path(__file__).with_name('soak_users.py')}",
        "--headless",
        f"--users={users}",
        f"--spawn-rate={users}",
        f"--run-time={duration_s}s",
        f"--host={url}",
        f"--csv={csv_prefix}",
        "--only-summary",
        "--stop-timeout=10",
    ]
    env = {**os.environ, "MDEPLOY_API_KEY": key, "MDEPLOY_SOAK_MODEL": MODEL}
    return subprocess.run(command, env=env, timeout=duration_s + 120, check=False).returncode


def locust_totals(csv_prefix: Path) -> dict[str, str]:
    with open(f"{csv_prefix}_stats.csv") as stats:
        return next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=600, help="seconds of load (default 600)")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--rollback-every", type=float, default=60.0, help="seconds between rollbacks")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before memory is measured")
    parser.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth (default 0.10)")
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(60.0, args.duration / 5)

    with tempfile.TemporaryDirectory(prefix="mdeploy-soak-") as scratch:
        folder = Path(scratch)
        server = start_server_process(["--grpc-port", "0", "--model-control-mode", "explicit"])
        gateway = start_gateway_process(folder / "gateway", [server.address], env=ENV)
        try:
            admin = Admin(gateway)
            versions = [admin.push(package) for package in build_versions(folder)]
            admin.call(
                "PUT",
                f"/v1/admin/deployments/{MODEL}",
                {"policy": {"kind": "thompson", "versions": versions}},
            )
            settings = GatewaySettings(data_dir=gateway.data_dir)
            key = with_keys(settings, lambda keys: keys.create(["predict", "feedback"])).key

            stop = threading.Event()
            changes: list[str] = []
            changer = threading.Thread(
                target=lambda: changes.extend(change_deployments(admin, versions, args.rollback_every, stop))
            )
            memory: dict[str, float] = {}

            def measure_after_warmup() -> None:
                if not stop.wait(warmup):
                    memory["gateway"], memory["server"] = (
                        rss_mib(gateway.process.pid),
                        rss_mib(server.process.pid),
                    )

            sampler = threading.Thread(target=measure_after_warmup)
            started = time.monotonic()
            changer.start()
            sampler.start()
            code = run_locust(gateway.url, key, args.users, args.duration, folder / "locust")
            stop.set()
            changer.join()
            sampler.join()
            elapsed = time.monotonic() - started
            end = {"gateway": rss_mib(gateway.process.pid), "server": rss_mib(server.process.pid)}
            totals = locust_totals(folder / "locust")
            status = admin.call("GET", f"/v1/admin/deployments/{MODEL}").json()
        finally:
            gateway.stop(timeout_s=30)
            server.stop(timeout_s=30)
    return report(args, elapsed, code, totals, changes, memory, end, status)


def report(
    args: argparse.Namespace,
    elapsed: float,
    code: int,
    totals: dict[str, str],
    changes: list[str],
    memory: dict[str, float],
    end: dict[str, float],
    status: dict[str, object],
) -> int:
    requests, failures = int(totals["Request Count"]), int(totals["Failure Count"])
    print(f"\nsoak: {elapsed:.0f} s, {args.users} users, a rollback every {args.rollback_every:g} s")
    print(f"  requests {requests} ({float(totals['Requests/s']):.0f}/s), failures {failures}")
    slowest = float(totals["Max Response Time"])
    print(f"  latency p50 {totals['50%']} ms, p99 {totals['99%']} ms, max {slowest:.0f} ms")
    print(f"  deployment changes: {changes.count('rollback')} rollbacks, {changes.count('rollout')} rollouts")
    arms = status.get("arms") or []
    for arm in arms if isinstance(arms, list) else []:
        mean = arm["mean_reward"]
        print(f"  arm {arm['version']}: pulls {arm['pulls']}, rewards {arm['rewards']}, mean reward {mean}")
    checks = {"zero failed requests": failures == 0 and code == 0 and requests > 0}
    for name in ("gateway", "server"):
        if name in memory:
            growth = end[name] / memory[name] - 1
            print(f"  {name} RSS {memory[name]:.0f} -> {end[name]:.0f} MiB ({growth:+.1%})")
            checks[f"{name} memory growth < {args.max_growth:.0%}"] = growth < args.max_growth
    for name, passed in checks.items():
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
