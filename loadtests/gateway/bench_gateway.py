"""Gateway benchmark: the JSON gateway next to a bare Starlette endpoint and direct gRPC.

One run measures, on this machine:

1. a bare Starlette endpoint (``loadtests.gateway.bare_http``: same uvicorn/uvloop/httptools stack, parses
   the body with orjson, fixed reply): the HTTP ceiling;
2. the gateway (``mdeploy serve`` in front of one ``mdeploy-server``, the digits-sklearn demo model
   pushed through the admin API) with a 1-row v1 ``:predict``, and its mean backend batch
   (``/metrics``);
3. sequential ModelInfer calls straight to the inference server with the same row;
4. what one open console costs the gateway (``loadtests.gateway.console_cost``: a real headless
   Chromium on the model's detail page; skipped with ``--no-console`` or without Chromium).

Both HTTP servers run for the whole measurement and each concurrency level loads the bare
endpoint and the gateway in alternating rounds (3 of 3 s each by default), added up per side,
so a change of machine speed during the run (this machine's CPU time per request drifts by
20-40% within minutes) touches both sides of a ratio alike. Both get the same request, API
key header included (the bare endpoint ignores it);

and prints its targets with PASS/MISS. The HTTP load is ``wrk`` (``loadtests.gateway.httpload``).

Run: ``python -m loadtests.gateway.bench_gateway [--quick] [--duration S] [--concurrency N ...]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from loadtests.gateway import console_cost, direct_grpc, gateway_report, httpload
from loadtests.gateway.bare_http import BareHttp, bare_http
from loadtests.gateway.direct_grpc import Call
from loadtests.gateway.gateway_report import GatewayReport, GatewayRow
from loadtests.gateway.httpload import HttpResult, Target
from loadtests.gateway.stack import MODEL, Stack, build_packages, running_stack
from loadtests.server.bench_server import DISTURBED_CORES


@dataclass(frozen=True)
class Plan:
    levels: tuple[int, ...]
    duration_s: int  # wrk takes whole seconds
    rounds: int  # the duration is measured in this many alternating rounds per side
    warmup_s: int
    grpc_s: float
    quiet_wait_s: float  # longest wait for other work on the machine to stop (before a row, a re-run)

    @property
    def top(self) -> int:
        return max(self.levels)

    @property
    def round_s(self) -> int:
        return self.duration_s // self.rounds

    def load(self, target: Target, concurrency: int) -> HttpResult:
        """One round of ``target``, after its own warm-up: the other side has just had the
        cores, and a round that starts cold weighs on the p99."""
        return httpload.load(target, concurrency, self.round_s, self.warmup_s, self.quiet_wait_s)


def plan_from(args: argparse.Namespace) -> Plan:
    levels = tuple(sorted(set(args.concurrency)))
    if args.quick:
        return Plan(levels, 2, 1, 1, 1.0, 3.0)
    if args.duration < 1:
        raise SystemExit("--duration must be at least 1 second")
    # Rounds of at least 3 s: each starts wrk's 64 connections afresh, and at 2 s that start
    # weighed on the p99 (17-28 ms against 14-16 ms in 6 s windows here).
    rounds = max(1, min(3, args.duration // 3))
    return Plan(levels, args.duration - args.duration % rounds, rounds, args.warmup, 3.0, 30.0)


def digit_row() -> np.ndarray:
    """A real handwritten digit (the row the demo's curl example sends), FP32 [1, 64]."""
    from examples.digits import load_data

    return load_data().x_test[:1]


def v1_body(row: np.ndarray) -> bytes:
    return orjson.dumps({"instances": row.tolist()})


def bare_target(bare: BareHttp, body: bytes, headers: dict[str, str]) -> Target:
    url = f"{bare.url}/v1/models/{MODEL}:predict"
    return Target("bare Starlette", url, body, headers, (bare.pid,))


def measure_pairs(
    stack: Stack, bare: BareHttp, body: bytes, plan: Plan
) -> tuple[list[HttpResult], list[GatewayRow]]:
    """The bare endpoint and the gateway at each concurrency, in alternating rounds."""
    gateway = gateway_target(stack, body)
    ceiling = bare_target(bare, body, dict(gateway.headers))
    pairs = [_alternating(stack, ceiling, gateway, c, plan) for c in plan.levels]
    return [bare_row for bare_row, _ in pairs], [gateway_row for _, gateway_row in pairs]


def _alternating(
    stack: Stack, ceiling: Target, gateway: Target, concurrency: int, plan: Plan
) -> tuple[HttpResult, GatewayRow]:
    bare_rounds: list[HttpResult] = []
    gateway_rounds: list[HttpResult] = []
    before = batch_rows(stack.url, MODEL)
    for _ in range(plan.rounds):
        bare_rounds.append(plan.load(ceiling, concurrency))
        gateway_rounds.append(plan.load(gateway, concurrency))
    after = batch_rows(stack.url, MODEL)
    # Includes the warm-up's batches: same load, so the same mean.
    rows, batches = after[0] - before[0], after[1] - before[1]
    mean_batch = rows / batches if batches else float("nan")
    return httpload.combined(bare_rounds), GatewayRow(httpload.combined(gateway_rounds), mean_batch)


def gateway_target(stack: Stack, body: bytes) -> Target:
    """The measured request, after checking that the gateway answers it with a prediction."""
    url = f"{stack.url}/v1/models/{MODEL}:predict"
    _check_answer(url, body, stack.key)
    headers = {"Authorization": f"Bearer {stack.key}"}
    return Target("gateway", url, body, headers, (stack.gateway_pid, stack.server_pid))


def _check_answer(url: str, body: bytes, key: str) -> None:
    """The measured request must be a success with predictions, not a fast error."""
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    response = httpx.post(url, content=body, headers=headers, timeout=10)
    if response.status_code != 200 or len(response.json()["predictions"]) != 1:
        raise RuntimeError(f"the gateway answered {response.status_code}: {response.text}")


def batch_rows(url: str, model: str) -> tuple[float, float]:
    """``mdeploy_batch_rows`` sum and count of ``model`` (all versions) from the gateway's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    mine = [s for s in samples if s.labels.get("model") == model]
    total = sum(s.value for s in mine if s.name == "mdeploy_batch_rows_sum")
    count = sum(s.value for s in mine if s.name == "mdeploy_batch_rows_count")
    return total, count


def measure_direct(stack: Stack, row: np.ndarray, plan: Plan) -> list[direct_grpc.DirectResult]:
    call = Call(stack.server_address, MODEL, stack.versions[MODEL], row, stack.server_pid)
    warmup = min(plan.warmup_s, 1.0)
    return [
        direct_grpc.measure_stub(call, plan.grpc_s, warmup),
        direct_grpc.measure_tritonclient(call, plan.grpc_s, warmup),
    ]


def event_loop_of(pid: int) -> str:
    """ "uvloop" when the process has uvloop's extension loaded, else asyncio's own loop.

    ``gateway/local.py`` asks uvicorn for uvloop, but awaits ``Server.serve()`` under
    ``asyncio.run``, where uvicorn does not apply ``loop=``: the table says which loop ran.
    """
    return "uvloop" if "/uvloop/" in Path(f"/proc/{pid}/maps").read_text() else "asyncio"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_gateway", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--duration",
        type=int,
        default=9,
        help="whole seconds measured per row and side, in up to 3 alternating rounds (default 9)",
    )
    add("--warmup", type=int, default=1, help="whole seconds of load before each row (default 1)")
    add("--concurrency", type=int, nargs="+", default=[1, 16, 64], help="connections (default 1 16 64)")
    add("--quick", action="store_true", help="~40 s smoke run: 2 s windows, short quiet wait")
    add("--no-console", action="store_true", help="skip the open-console measurement (needs Chromium)")
    return parser


def measure_console(stack: Stack, body: bytes, plan: Plan) -> console_cost.ConsoleCost:
    gateway = gateway_target(stack, body)
    return console_cost.measure(
        stack.url,
        stack.admin_key,
        MODEL,
        stack.gateway_pid,
        lambda: plan.load(gateway, plan.top),
        plan.rounds,
        idle_window_s=3.0 if plan.duration_s < 3 else console_cost.IDLE_WINDOW_S,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = plan_from(args)
    with_console = not args.no_console and console_cost.chromium_available()
    if 1 not in plan.levels:
        raise SystemExit("--concurrency must include 1: the added-latency target is measured there")
    httpload.check_wrk()
    started = time.perf_counter()
    row = digit_row()
    body = v1_body(row)
    with tempfile.TemporaryDirectory(prefix="mdeploy-bench-gateway-") as folder:
        packages = build_packages(Path(folder) / "packages", [MODEL])
        with running_stack(Path(folder), packages) as stack, bare_http() as ceiling:
            quiet = httpload.wait_for_quiet(plan.quiet_wait_s)
            bare, gateway = measure_pairs(stack, ceiling, body, plan)
            direct = measure_direct(stack, row, plan)
            loop = event_loop_of(stack.gateway_pid)
            console = measure_console(stack, body, plan) if with_console else None
    report = GatewayReport(
        plan.top, plan.duration_s, plan.rounds, DISTURBED_CORES, quiet, bare, gateway, direct, len(body), loop
    )
    gateway_report.render(report)
    if console is not None:
        console_cost.render(console, plan.top)
    else:
        print("no console measurement (--no-console, or no /usr/bin/chromium and chromedriver)")
    print(f"total run time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
