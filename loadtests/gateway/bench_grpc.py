"""The gateway's gRPC door against a bare grpc.aio server and mdeploy-server called directly.

1-row ModelInfer requests to the tiny MLP (64→64→10) at each concurrency, side by side in one
run, each measured by a fresh generator process (``loadtests.server.loadgen``: C-core futures,
the request serialized once, replies not parsed), whose CPU is reported:

* (a) ``bare gRPC``: a grpc.aio server on the same proto that decodes the request and returns a
  fixed reply (``loadtests.server.bare_server``): the ceiling of any Python gRPC server here;
* (b) ``mdeploy-server``: the inference server the gateway uses, called with its server token;
* (c) ``gateway gRPC``: the gateway's door, with an API key: auth, rate limit, batching, then (b);
* (d) ``gRPC relay``: a grpc.aio server that hands the request's bytes to (b) and the reply's
  bytes back, doing nothing else (``loadtests.gateway.grpc_relay``). It is the floor of any
  Python gRPC hop in front of (b): (d) - (b) is what the hop costs, (c) - (d) the door's own work;
* and, from the same run, ``gateway HTTP``: the same prediction as TF-Serving JSON through wrk.

Targets: (c) ≥ 50% of (a)'s req/s at 64 in flight; p99 ≤ 3x p50; at 1 in flight, (c) adds at
most 0.5 ms to (b)'s p50. Run: ``python -m loadtests.gateway.bench_grpc [--quick]``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console

from core.ports import free_port
from core.server_process import start_server_process
from core.server_token import ensure_token, token_metadata
from examples.onnx_models import mlp
from gateway.process import start_gateway_process
from loadtests.common.paths import ROOT
from loadtests.common.tables import P99_OVER_P50, table, verdict
from loadtests.gateway import grpc_relay, httpload
from loadtests.gateway.stack import LOAD_TEST_ENV, create_key, push
from loadtests.server import loadgen
from loadtests.server.loadgen import LoadResult
from loadtests.server.targets import TINY, Endpoint, bare_server, listening_child
from modelpkg.builder import build

RELAY = "gRPC relay"
MODEL = TINY.name
WIDTH = TINY.width


@dataclass(frozen=True)
class Plan:
    levels: tuple[int, ...]
    duration_s: float
    warmup_s: float


@dataclass(frozen=True)
class GrpcTarget:
    name: str
    address: str
    pid: int
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Row:
    target: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    generator_cores: float
    server_cores: float

    @property
    def tail(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms else float("nan")


def tiny_package(folder: Path) -> Path:
    """The tiny MLP as a package, pushed to the gateway as a user would."""
    package = folder / "tiny.pkg"
    samples = {"x": np.random.default_rng(0).standard_normal((4, WIDTH)).astype(np.float32)}
    build(mlp(list(TINY.sizes), seed=1), package, name=MODEL, samples=samples, code_dir=None)
    return package


def grpc_load(target: GrpcTarget, concurrency: int, plan: Plan) -> Row:
    command = loadgen.command(
        target.address,
        target.pid,
        MODEL,
        WIDTH,
        concurrency,
        warmup_s=plan.warmup_s,
        duration_s=plan.duration_s,
        metadata=target.metadata,
    )
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed against {target.name}:\n{done.stderr}")
    result = LoadResult.from_json(done.stdout)
    if result.errors:
        raise RuntimeError(f"{target.name}: {result.errors} failed calls, first: {result.first_error}")
    window = result.window_s
    return Row(
        target.name,
        concurrency,
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.client_cpu_s / window,
        result.server_cpu_s / window,
    )


def http_load(url: str, key: str, pid: int, concurrency: int, plan: Plan) -> Row:
    body = orjson.dumps({"instances": [[0.5] * WIDTH]})
    target = httpload.Target(
        "gateway HTTP", f"{url}/v1/models/{MODEL}:predict", body, {"Authorization": f"Bearer {key}"}, (pid,)
    )
    seconds = max(1, round(plan.duration_s))
    result = httpload.load(target, concurrency, seconds, max(1, round(plan.warmup_s)), 1.0)
    return Row(
        "gateway HTTP",
        concurrency,
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.wrk_cpu_s / result.window_s,
        result.pid_cpu_s[0] / result.window_s,
    )


def relay(backend: str, token_file: Path) -> AbstractContextManager[Endpoint]:
    args = ("--backend", backend, "--token-file", str(token_file))
    return listening_child("loadtests.gateway.grpc_relay", args, grpc_relay.LISTENING)


def measure(plan: Plan, work: Path) -> list[Row]:
    token_file = work / "server-token"
    token = ensure_token(token_file)
    server = start_server_process(
        ["--grpc-port", "0", "--model-control-mode", "explicit", "--auth-token-file", str(token_file)]
    )
    try:
        backend = f"grpc://{server.address}?token_file={token_file}"
        gateway = start_gateway_process(
            work / "gateway", [backend], grpc_port=free_port(), env=dict(LOAD_TEST_ENV)
        )
        try:
            push(gateway.url, gateway.admin_key, tiny_package(work))
            key = create_key(work / "gateway")
            direct = GrpcTarget("mdeploy-server", server.address, server.process.pid, token_metadata(token))
            door = GrpcTarget(
                "gateway gRPC",
                gateway.grpc_address,
                gateway.process.pid,
                (("authorization", f"Bearer {key}"),),
            )
            rows: list[Row] = []
            with bare_server() as bare, relay(server.address, token_file) as floor:
                ceiling = GrpcTarget("bare gRPC", bare.address, bare.pid)
                hop = GrpcTarget(RELAY, floor.address, floor.pid)
                for concurrency in plan.levels:
                    rows += [grpc_load(t, concurrency, plan) for t in (ceiling, direct, door, hop)]
                    rows.append(http_load(gateway.url, key, gateway.process.pid, concurrency, plan))
            return rows
        finally:
            gateway.stop(timeout_s=10)
    finally:
        server.stop(timeout_s=10)


def report(rows: Sequence[Row], plan: Plan) -> None:
    console = Console(width=160)
    shown = table(
        f"1-row requests to the tiny MLP, {plan.duration_s:g} s per row",
        ("target", "in flight", "req/s", "p50 ms", "p99 ms", "p99/p50", "generator cores", "server cores"),
        1,
    )
    for row in rows:
        shown.add_row(
            row.target,
            str(row.concurrency),
            f"{row.rps:,.0f}",
            f"{row.p50_ms:.2f}",
            f"{row.p99_ms:.2f}",
            f"{row.tail:.1f}",
            f"{row.generator_cores:.2f}",
            f"{row.server_cores:.2f}",
        )
    console.print(shown)
    by = {(row.target, row.concurrency): row for row in rows}
    targets = table("Targets of the gRPC door", ("target", "measured", "needed", "result"), 3)
    top, low = max(plan.levels), min(plan.levels)
    door, bare = by[("gateway gRPC", top)], by[("bare gRPC", top)]
    share = door.rps / bare.rps
    targets.add_row(
        f"gateway gRPC req/s at {top} in flight vs bare gRPC",
        f"{door.rps:,.0f} / {bare.rps:,.0f} = {share:.0%}",
        "≥ 50%",
        verdict(share >= 0.5),
    )
    for concurrency in plan.levels:
        row = by[("gateway gRPC", concurrency)]
        targets.add_row(
            f"p99 ≤ {P99_OVER_P50:g}x p50: gateway gRPC at {concurrency} in flight",
            f"{row.p99_ms:.2f} ms / {row.p50_ms:.2f} ms = {row.tail:.1f}x",
            f"≤ {P99_OVER_P50:g}x",
            verdict(row.tail <= P99_OVER_P50),
        )
    door_p50, direct_p50 = by[("gateway gRPC", low)].p50_ms, by[("mdeploy-server", low)].p50_ms
    floor_p50 = by[(RELAY, low)].p50_ms
    added = door_p50 - direct_p50
    targets.add_row(
        f"p50 added over mdeploy-server at {low} in flight",
        f"{door_p50:.2f} - {direct_p50:.2f} = {added:.2f} ms",
        "≤ 0.5 ms",
        verdict(added <= 0.5),
    )
    console.print(targets)
    console.print(
        f"Of the {added:.2f} ms added at {low} in flight, the gRPC hop itself (relay - mdeploy-server) "
        f"costs {floor_p50 - direct_p50:.2f} ms and the door's own work (gateway - relay) "
        f"{door_p50 - floor_p50:.2f} ms."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_grpc", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=float, default=5.0, help="seconds measured per row (default 5)")
    add("--warmup", type=float, default=1.0, help="seconds of load before each row (default 1)")
    add("--concurrency", type=int, nargs="+", default=[1, 16, 64], help="calls in flight (default 1 16 64)")
    add("--quick", action="store_true", help="2 s windows")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    httpload.check_wrk()
    plan = Plan(
        tuple(args.concurrency), 2.0 if args.quick else args.duration, 1.0 if args.quick else args.warmup
    )
    with tempfile.TemporaryDirectory(prefix="mdeploy-bench-grpc-") as folder:
        rows = measure(plan, Path(folder))
    report(rows, plan)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
