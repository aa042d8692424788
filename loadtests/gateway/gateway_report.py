"""The gateway benchmark's printed tables: measurements, targets with PASS/MISS, and context."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass

import starlette
import uvicorn
from rich.console import Console
from rich.table import Table

# report.py's helpers (private there, and that file is the server benchmark's): reused so both
# benchmarks print alike.
from loadtests.common import tables
from loadtests.common.tables import P99_OVER_P50
from loadtests.gateway.direct_grpc import DirectResult
from loadtests.gateway.httpload import HttpResult, Quiet

GATEWAY_VS_BARE = 0.5
ADDED_P50_MS = 1.0


@dataclass(frozen=True)
class GatewayRow:
    result: HttpResult
    mean_batch: float  # rows per backend call over the row's warm-up and window


@dataclass(frozen=True)
class GatewayReport:
    top: int
    duration_s: int
    rounds: int
    disturbed_cores: float
    quiet: Quiet
    bare: list[HttpResult]
    gateway: list[GatewayRow]
    direct: list[DirectResult]
    body_bytes: int
    gateway_loop: str  # the event loop the gateway process runs: "uvloop" or "asyncio"

    def bare_at(self, concurrency: int) -> HttpResult:
        return next(r for r in self.bare if r.concurrency == concurrency)

    def gateway_at(self, concurrency: int) -> GatewayRow:
        return next(r for r in self.gateway if r.result.concurrency == concurrency)

    @property
    def stub(self) -> DirectResult:
        """The direct client the added-latency target is measured against."""
        return next(d for d in self.direct if d.client == "stub")

    @property
    def added_p50_ms(self) -> float:
        return self.gateway_at(1).result.p50_ms - self.stub.p50_ms


def render(report: GatewayReport) -> None:
    # Piped (| tee), rich would wrap the tables at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 220, highlight=False)
    console.print(_header(report))
    console.print(_load_table(report))
    console.print(_ratio_table(report))
    console.print(_direct_table(report))
    console.print(_targets_table(report))
    for line in _context(report):
        console.print(line)


def _header(report: GatewayReport) -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in tables.cpu_info() if ln.startswith("model name")), "?")
    quiet = report.quiet
    state = (
        "quiet"
        if quiet.others_cores <= report.disturbed_cores
        else f"[red]BUSY: other processes kept using {quiet.others_cores:.2f} cores[/] "
        f"(waited {quiet.waited_s:.0f} s); numbers below are disturbed"
    )
    return (
        f"[bold]mdeploy gateway benchmark[/] — {os.cpu_count()} CPU cores ({cpu}), Python "
        f"{platform.python_version()}, uvicorn {uvicorn.__version__} (httptools, 1 worker; event loop: "
        f"bare uvloop, gateway {report.gateway_loop}), starlette {starlette.__version__}; wrk, 1 thread; "
        f"{report.duration_s} s per row and side after warm-up, in {report.rounds} "
        f"round{'s' if report.rounds != 1 else ''} alternating bare and gateway; 127.0.0.1.\n"
        f"Request: v1 :predict of digits-sklearn, 1 row of 64 pixels ({report.body_bytes} "
        "bytes of JSON). Client and servers share the SAME cores. Before measuring: load average "
        f"{quiet.load_average}, other processes {quiet.others_cores:.2f} cores ({state}).\n"
        "'others' = cores used by processes outside this benchmark over the window; * = over "
        f"{report.disturbed_cores:g}, measured twice, least disturbed kept."
    )


def _others(cores: float, report: GatewayReport) -> str:
    return f"{cores:.2f}" + (" *" if cores > report.disturbed_cores else "")


def _load_table(report: GatewayReport) -> Table:
    columns = (
        "endpoint",
        "in flight",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99/p50",
        "HTTP server cores",
        "HTTP server µs/req",
        "inference server µs/req",
        "mean batch",
        "wrk cores",
        "wrk µs/req",
        "others",
        "errors",
    )
    table = tables.table("HTTP under load (wrk, closed loop: N connections, one request each)", columns, 1)
    for result in report.bare:
        table.add_row(*_load_cells(result, report, None))
    for row in report.gateway:
        table.add_row(*_load_cells(row.result, report, row.mean_batch))
    return table


def _load_cells(r: HttpResult, report: GatewayReport, mean_batch: float | None) -> list[str]:
    gateway = mean_batch is not None
    tail = f"{r.tail_ratio:.1f}" + (f" {tables.verdict(r.tail_ratio <= P99_OVER_P50)}" if gateway else "")
    return [
        r.name,
        str(r.concurrency),
        f"{r.rps:,.0f}",
        f"{r.p50_ms:.2f}",
        f"{r.p90_ms:.2f}",
        f"{r.p99_ms:.2f}",
        tail,
        f"{r.cores(r.pid_cpu_s[0]):.2f}",
        f"{r.us_per_request(r.pid_cpu_s[0]):.0f}",
        f"{r.us_per_request(r.pid_cpu_s[1]):.0f}" if gateway else "—",
        f"{mean_batch:.1f}" if mean_batch is not None else "—",
        f"{r.cores(r.wrk_cpu_s):.2f}",
        f"{r.us_per_request(r.wrk_cpu_s):.1f}",
        _others(r.others_cores, report),
        str(r.errors),
    ]


def _ratio_table(report: GatewayReport) -> Table:
    columns = ("in flight", "gateway / bare req/s", "gateway p50 - bare p50 ms", "gateway / bare CPU per req")
    table = tables.table("Gateway next to the bare Starlette endpoint", columns, 1)
    for row in report.gateway:
        g, b = row.result, report.bare_at(row.result.concurrency)
        cpu = g.us_per_request(g.pid_cpu_s[0]) / b.us_per_request(b.pid_cpu_s[0])
        table.add_row(
            str(g.concurrency),
            f"{g.rps:,.0f} / {b.rps:,.0f} = {g.rps / b.rps:.0%}",
            f"{g.p50_ms - b.p50_ms:.2f}",
            f"{cpu:.1f}x",
        )
    return table


def _direct_table(report: GatewayReport) -> Table:
    columns = ("client", "calls", "p50 ms", "p99 ms", "client µs/call", "server µs/call", "gateway c=1 p50 -")
    table = tables.table(
        "Straight to the inference server over gRPC, one call at a time (same row)", columns, 1
    )
    gateway_p50 = report.gateway_at(1).result.p50_ms
    for d in report.direct:
        table.add_row(
            d.client + (" (target)" if d is report.stub else ""),
            f"{d.requests:,}",
            f"{d.p50_ms:.2f}",
            f"{d.p99_ms:.2f}",
            f"{d.us_per_request(d.client_cpu_s):.0f}",
            f"{d.us_per_request(d.server_cpu_s):.0f}",
            f"{gateway_p50 - d.p50_ms:+.2f} ms",
        )
    return table


def _targets_table(report: GatewayReport) -> Table:
    table = tables.table("Targets of the gateway benchmark", ("target", "measured", "needed", "result"), 4)
    g, b = report.gateway_at(report.top).result, report.bare_at(report.top)
    ratio = g.rps / b.rps
    table.add_row(
        f"gateway req/s at {report.top} in flight vs bare Starlette",
        f"{g.rps:,.0f} / {b.rps:,.0f} = {ratio:.0%}",
        f"≥ {GATEWAY_VS_BARE:.0%}",
        tables.verdict(ratio >= GATEWAY_VS_BARE),
    )
    for row in report.gateway:
        r = row.result
        table.add_row(
            f"p99 ≤ 3x p50: gateway at {r.concurrency} in flight",
            f"{r.p99_ms:.2f} ms / {r.p50_ms:.2f} ms = {r.tail_ratio:.1f}x",
            f"≤ {P99_OVER_P50:g}x",
            tables.verdict(r.tail_ratio <= P99_OVER_P50),
        )
    one, stub = report.gateway_at(1).result, report.stub
    table.add_row(
        "gateway p50 added over direct gRPC at 1 in flight",
        f"{one.p50_ms:.2f} - {stub.p50_ms:.2f} = {report.added_p50_ms:.2f} ms",
        f"≤ {ADDED_P50_MS:g} ms",
        tables.verdict(report.added_p50_ms <= ADDED_P50_MS),
    )
    return table


def _context(report: GatewayReport) -> list[str]:
    """Numbers that say why a target passes or misses on this machine."""
    top = report.gateway_at(report.top)
    g, b = top.result, report.bare_at(report.top)
    gateway_us, bare_us = g.us_per_request(g.pid_cpu_s[0]), b.us_per_request(b.pid_cpu_s[0])
    server_us = g.us_per_request(g.pid_cpu_s[1])
    one, stub = report.gateway_at(1).result, report.stub
    return [
        f"At {report.top} in flight the gateway process used {g.cores(g.pid_cpu_s[0]):.2f} cores "
        f"({gateway_us:.0f} µs CPU/request; its one event loop can give at most one core → "
        f"≤ {1e6 / gateway_us:,.0f} req/s), the inference server {server_us:.0f} µs/request at a mean batch "
        f"of {top.mean_batch:.1f} rows, wrk {g.us_per_request(g.wrk_cpu_s):.1f} µs/request; "
        f"bare Starlette {bare_us:.0f} µs/request.",
        f"At 1 in flight: gateway p50 {one.p50_ms:.2f} ms with {one.us_per_request(one.pid_cpu_s[0]):.0f} µs "
        f"of gateway CPU/request; direct gRPC (stub) p50 {stub.p50_ms:.2f} ms.",
    ]
