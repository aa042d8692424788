"""What drift sketching costs the gateway per request: DriftMonitor in a loop, no network.

A package of the tiny MLP (64 inputs, 10 outputs) carries a reference profile; 1-row answers go
through ``DriftMonitor.observe`` (the request path: one random draw, and for a sampled request
an append) and the background flush (``VersionSketches.ingest``: one batch per version into the
5m, 1h and 24h buckets), as in the gateway at 64 requests in flight (64 queued per flush).
Reported in µs of CPU per request for each sample rate, with the request path and the flush
apart. The budget is 10 µs per request at 64 in flight.

Then the whole gateway, before and after, in one run: three ``mdeploy serve`` stacks with the
demo digits model (which carries a reference profile), drift off (sample rate 0), at the
default 0.2, and at 1.0, each loaded by wrk at 64 connections in alternating rounds; the
gateway process's CPU per request, and what drift adds to it.

Run: ``python -m loadtests.gateway.bench_drift [--requests 20000] [--rounds 3 --round-s 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from core.signature import Signature, TensorSpec
from examples.onnx_models import mlp
from gateway.catalog import ServedVersion
from gateway.drift.monitor import DriftMonitor, StoredVersion
from loadtests.common.tables import table
from loadtests.gateway import httpload
from loadtests.gateway.bench_gateway import digit_row, v1_body
from loadtests.gateway.httpload import HttpResult, Target
from loadtests.gateway.stack import MODEL, build_packages, running_stack
from modelpkg import build, read_package

RATES = (0.0, 0.05, 0.2, 1.0)
GATEWAY_RATES = (0.0, 0.2, 1.0)
IN_FLIGHT = 64


def measure(package: Path, rate: float, requests: int) -> tuple[float, float]:
    """(request path µs, flush µs) per request."""
    return asyncio.run(_measure(package, rate, requests))


async def _measure(package: Path, rate: float, requests: int) -> tuple[float, float]:
    manifest = read_package(package).manifest

    async def lookup(model: str, version: str) -> StoredVersion:
        return StoredVersion(manifest, package)

    monitor = DriftMonitor(lookup, rate, seed=0)
    served = ServedVersion(
        "tiny", "1", Signature((TensorSpec("x", "FP32", (-1, 64)),), (TensorSpec("y", "FP32", (-1, 10)),)), 64
    )
    rows = np.random.default_rng(0).standard_normal((IN_FLIGHT, 64)).astype(np.float32)
    outputs = np.random.default_rng(1).standard_normal((IN_FLIGHT, 10)).astype(np.float32)
    observe_s = flush_s = 0.0
    for _ in range(0, requests, IN_FLIGHT):
        started = time.process_time()
        for i in range(IN_FLIGHT):
            monitor.observe(served, {"x": rows[i : i + 1]}, {"y": outputs[i : i + 1]}, "")
        observe_s += time.process_time() - started
        started = time.process_time()
        await monitor.flush()
        flush_s += time.process_time() - started
    return observe_s / requests * 1e6, flush_s / requests * 1e6


def measure_gateways(rounds: int, round_s: int) -> dict[float, HttpResult]:
    """Gateway CPU under wrk at ``IN_FLIGHT`` connections, per drift sample rate, in alternating rounds."""
    httpload.check_wrk()
    body = v1_body(digit_row())
    results: dict[float, list[HttpResult]] = {rate: [] for rate in GATEWAY_RATES}
    with (
        tempfile.TemporaryDirectory(prefix="mdeploy-bench-drift-gw-") as folder,
        contextlib.ExitStack() as stacks,
    ):
        packages = build_packages(Path(folder) / "packages", [MODEL])
        targets = {}
        for rate in GATEWAY_RATES:
            stack = stacks.enter_context(
                running_stack(
                    Path(folder) / f"rate-{rate:g}", packages, {"MDEPLOY_DRIFT_SAMPLE_RATE": str(rate)}
                )
            )
            headers = {"Authorization": f"Bearer {stack.key}"}
            url = f"{stack.url}/v1/models/{MODEL}:predict"
            targets[rate] = Target(
                f"drift {rate:g}", url, body, headers, (stack.gateway_pid, stack.server_pid)
            )
        httpload.wait_for_quiet(30.0)
        for _ in range(rounds):
            for rate, target in targets.items():
                results[rate].append(httpload.load(target, IN_FLIGHT, round_s, 1, 10.0))
    return {rate: httpload.combined(parts) for rate, parts in results.items()}


def gateway_table(results: dict[float, HttpResult], rounds: int, round_s: int) -> Table:
    shown = table(
        f"The gateway with drift off and on: wrk, {IN_FLIGHT} connections, {rounds} alternating rounds of "
        f"{round_s} s each",
        (
            "sample rate",
            "req/s",
            "p50 ms",
            "p99 ms",
            "gateway CPU µs/request",
            "added by drift",
            "budget 10 µs",
        ),
        1,
    )
    off = results[0.0]
    base = off.pid_cpu_s[0] / off.requests * 1e6
    for rate, result in results.items():
        cpu = result.pid_cpu_s[0] / result.requests * 1e6
        added = cpu - base
        shown.add_row(
            f"{rate:g}",
            f"{result.rps:,.0f}",
            f"{result.p50_ms:.2f}",
            f"{result.p99_ms:.2f}",
            f"{cpu:.1f}",
            "" if rate == 0.0 else f"{added:+.1f}",
            "" if rate == 0.0 else ("PASS" if added <= 10 else "MISS"),
        )
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per gateway (default 3)")
    parser.add_argument("--round-s", type=int, default=3, help="whole seconds per round (default 3)")
    parser.add_argument("--no-gateway", action="store_true", help="only the in-process measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mdeploy-bench-drift-") as folder:
        package = Path(folder) / "tiny.pkg"
        reference = np.random.default_rng(2).standard_normal((2_000, 64)).astype(np.float32)
        build(
            mlp([64, 64, 10], seed=1),
            package,
            name="tiny",
            samples=reference[:8],
            reference=reference,
            code_dir=None,
        )
        shown = table(
            f"Drift sketching, µs of CPU per 1-row request ({args.requests:,}, {IN_FLIGHT} per flush)",
            ("sample rate", "request path", "flush (off the path)", "total", "budget 10 µs"),
            1,
        )
        for rate in RATES:
            observe, flush = measure(package, rate, args.requests)
            total = observe + flush
            shown.add_row(
                f"{rate:g}",
                f"{observe:.2f}",
                f"{flush:.2f}",
                f"{total:.2f}",
                "PASS" if total <= 10 else "MISS",
            )
    console = Console(width=160)
    console.print(shown)
    if not args.no_gateway:
        console.print(gateway_table(measure_gateways(args.rounds, args.round_s), args.rounds, args.round_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
