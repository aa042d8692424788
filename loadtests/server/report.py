"""The benchmark's printed tables: measurements, targets with PASS/MISS, and context."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass

import grpc
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from loadtests.common import loop, tables
from loadtests.common.tables import P99_OVER_P50
from loadtests.server.loadgen import LoadResult
from loadtests.server.ort_baseline import OrtResult
from loadtests.server.statistics import Counters
from loadtests.server.targets import BIG, CHOSEN, TINY, ModelSpec

TINY_VS_BARE = 0.5
BIG_VS_ORT = 0.6
ORT_BATCH = 32


@dataclass(frozen=True)
class GeneratorRow:
    result: LoadResult
    kept: bool


@dataclass(frozen=True)
class ServerRow:
    server: str
    model: ModelSpec
    batching: str
    result: LoadResult
    chosen: bool = True  # counts for the targets (False: a sweep alternative)

    @property
    def tail_ratio(self) -> float:
        return self.result.p99_ms / self.result.p50_ms


@dataclass(frozen=True)
class Report:
    top: int
    duration_s: float
    disturbed_cores: float
    ort: list[OrtResult]
    generators: list[GeneratorRow]
    bare: list[ServerRow]
    mdeploy: list[ServerRow]

    def ort_result(self, model: ModelSpec, batch: int) -> OrtResult:
        return next(r for r in self.ort if r.model == model.name and r.batch == batch)

    def bare_row(self, model: ModelSpec, concurrency: int) -> ServerRow:
        return next(r for r in self.bare if r.model == model and r.result.concurrency == concurrency)

    def chosen_row(self, model: ModelSpec, concurrency: int) -> ServerRow:
        return next(
            r for r in self.mdeploy if r.model == model and r.chosen and r.result.concurrency == concurrency
        )


def render(report: Report) -> None:
    # Piped (make bench | tee), rich would wrap the tables at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False)
    console.print(_header(report))
    console.print(_ort_table(report))
    if report.generators:
        console.print(_generator_table(report))
    console.print(_server_table(report))
    console.print(_inside_table(report))
    console.print(_targets_table(report))
    for line in _context(report):
        console.print(line)


def _per_request_us(cpu_s: float, result: LoadResult) -> str:
    return f"{1e6 * cpu_s / max(result.requests, 1):.0f}"


def _cores(cpu_s: float, result: LoadResult) -> str:
    return f"{cpu_s / result.window_s:.2f}"


def _others(cores: float, report: Report) -> str:
    return f"{cores:.2f}" + (" *" if cores > report.disturbed_cores else "")


def _header(report: Report) -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in tables.cpu_info() if ln.startswith("model name")), "?")
    return (
        f"[bold]mdeploy-server benchmark[/] — {os.cpu_count()} CPU cores ({cpu}), Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}, onnxruntime {ort.__version__}, "
        f"servers on {loop.NAME}; {report.duration_s:g} s windows after warm-up; 127.0.0.1.\n"
        "Client and server share the SAME cores: the generator's CPU is shown next to each row, and "
        "every req/s is what the server got with the rest. 'others' = cores used by processes outside "
        f"this benchmark (this machine is shared); * = over {report.disturbed_cores:g}, measured twice, "
        "least disturbed kept."
    )


def _ort_table(report: Report) -> Table:
    table = tables.table(
        "In-process onnxruntime (the server's create_session and default settings)",
        ("model", "batch", "rows/s", "µs/run", "CPU cores", "CPU µs/row", "others"),
        1,
    )
    kinds = {TINY.name: TINY.kind, BIG.name: BIG.kind}
    for r in report.ort:
        table.add_row(
            kinds[r.model],
            str(r.batch),
            f"{r.rows_per_s:,.0f}",
            f"{r.us_per_run:,.0f}",
            f"{r.cpu_cores:.2f}",
            f"{r.cpu_us_per_row:.1f}",
            _others(r.others_cores, report),
        )
    return table


def _generator_table(report: Report) -> Table:
    table = tables.table(
        "Load generators against the bare gRPC server (tiny request); the kept one is the default",
        (
            "generator",
            "in flight",
            "req/s",
            "p50 ms",
            "p99 ms",
            "client cores",
            "client µs/req",
            "others",
            "",
        ),
        1,
    )
    for row in report.generators:
        r = row.result
        table.add_row(
            r.generator,
            str(r.concurrency),
            f"{r.rps:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            _cores(r.client_cpu_s, r),
            _per_request_us(r.client_cpu_s, r),
            _others(r.others_cores, report),
            "kept" if row.kept else "",
        )
    return table


def _server_table(report: Report) -> Table:
    columns = (
        "server",
        "model",
        "batching (config.pbtxt)",
        "in flight",
        "req/s = rows/s",
        "p50 ms",
        "p99 ms",
        "p99/p50",
        "server cores",
        "server µs/req",
        "client cores",
        "client µs/req",
        "others",
        "errors",
    )
    table = tables.table("Servers under load (1-row requests, closed loop, one channel)", columns, 3)
    for row in [*report.bare, *report.mdeploy]:
        table.add_row(*_server_cells(row, report))
    return table


def _server_cells(row: ServerRow, report: Report) -> list[str]:
    r = row.result
    tail = f"{row.tail_ratio:.1f}"
    if row.server == "mdeploy":
        tail = f"{tail} {tables.verdict(row.tail_ratio <= P99_OVER_P50)}"
    batching = row.batching + (" (chosen)" if row.server == "mdeploy" and row.chosen else "")
    return [
        row.server,
        row.model.name,
        batching,
        str(r.concurrency),
        f"{r.rps:,.0f}",
        f"{r.p50_ms:.2f}",
        f"{r.p99_ms:.2f}",
        tail,
        _cores(r.server_cpu_s, r),
        _per_request_us(r.server_cpu_s, r),
        _cores(r.client_cpu_s, r),
        _per_request_us(r.client_cpu_s, r),
        _others(r.others_cores, report),
        str(r.errors),
    ]


def _inside_table(report: Report) -> Table:
    columns = (
        "model",
        "batching",
        "in flight",
        "mean batch",
        "client p50 ms",
        "in model ms/req",
        "queued ms/req",
        "merge µs/batch",
        "onnxruntime µs/batch",
        "split µs/batch",
        "onnxruntime CPU µs/row in-process b1 / b32",
    )
    table = tables.table(
        "Inside mdeploy-server (its ModelStatistics over the window; in model = validation + queue + batch)",
        columns,
        2,
    )
    for row in report.mdeploy:
        c = row.result.counters or Counters()
        b1, b32 = report.ort_result(row.model, 1), report.ort_result(row.model, ORT_BATCH)
        table.add_row(
            row.model.name,
            row.batching,
            str(row.result.concurrency),
            f"{c.mean_batch:.1f}",
            f"{row.result.p50_ms:.2f}",
            f"{c.per_request_us(c.request_ns) / 1e3:.2f}",
            f"{c.per_request_us(c.queue_ns) / 1e3:.2f}",
            f"{c.per_execution_us(c.merge_ns):,.0f}",
            f"{c.per_execution_us(c.infer_ns):,.0f}",
            f"{c.per_execution_us(c.split_ns):,.0f}",
            f"{b1.cpu_us_per_row:.0f} / {b32.cpu_us_per_row:.0f}",
        )
    return table


def _targets_table(report: Report) -> Table:
    table = tables.table("Targets of the server benchmark", ("target", "measured", "needed", "result"), 4)
    tiny, bare = report.chosen_row(TINY, report.top), report.bare_row(TINY, report.top)
    ratio = tiny.result.rps / bare.result.rps
    table.add_row(
        f"tiny req/s at {report.top} in flight vs bare gRPC ceiling",
        f"{tiny.result.rps:,.0f} / {bare.result.rps:,.0f} = {ratio:.0%}",
        f"≥ {TINY_VS_BARE:.0%}",
        tables.verdict(ratio >= TINY_VS_BARE),
    )
    big, ort_rows = report.chosen_row(BIG, report.top), report.ort_result(BIG, ORT_BATCH).rows_per_s
    ratio = big.result.rps / ort_rows
    table.add_row(
        f"compute-bound rows/s at {report.top} in flight vs onnxruntime batch {ORT_BATCH}",
        f"{big.result.rps:,.0f} / {ort_rows:,.0f} = {ratio:.0%}",
        f"≥ {BIG_VS_ORT:.0%}",
        tables.verdict(ratio >= BIG_VS_ORT),
    )
    for row in (r for r in report.mdeploy if r.chosen):
        table.add_row(
            f"p99 ≤ 3x p50: {row.model.name} at {row.result.concurrency} in flight",
            f"{row.result.p99_ms:.2f} ms / {row.result.p50_ms:.2f} ms = {row.tail_ratio:.1f}x",
            f"≤ {P99_OVER_P50:g}x",
            tables.verdict(row.tail_ratio <= P99_OVER_P50),
        )
    return table


def _context(report: Report) -> list[str]:
    """Numbers that say why a target passes or misses on this machine."""
    tiny, bare = report.chosen_row(TINY, report.top), report.bare_row(TINY, report.top)
    big, bare_big = report.chosen_row(BIG, report.top), report.bare_row(BIG, report.top)
    bare_us = 1e6 * bare.result.server_cpu_s / bare.result.requests
    tiny_us = 1e6 * tiny.result.server_cpu_s / tiny.result.requests
    server_only = bare_us / tiny_us
    cores = os.cpu_count() or 1
    ort_big = report.ort_result(BIG, ORT_BATCH)
    # If the gRPC work (client + bare server, with the 4 KiB request) and onnxruntime at batch
    # 32 share the cores, this is the most rows/s any server on this gRPC stack could reach.
    grpc_s = (bare_big.result.client_cpu_s + bare_big.result.server_cpu_s) / bare_big.result.requests
    bound = cores / (grpc_s + ort_big.cpu_us_per_row / 1e6)
    return [
        f"Chosen batching: tiny {_one_line(CHOSEN[TINY.name].text)}; "
        f"compute-bound {_one_line(CHOSEN[BIG.name].text)}. mdeploy-server runs with its default flags.",
        f"Server CPU per request, tiny at {report.top} in flight: bare {bare_us:.0f} µs, "
        f"mdeploy {tiny_us:.0f} µs: on cores of its own (client elsewhere) mdeploy would reach "
        f"≈{server_only:.0%} of the ceiling.",
        f"Compute-bound bound on {cores} shared cores: gRPC (client + bare server, 4 KiB request) "
        f"{1e6 * grpc_s:.0f} µs CPU/request + onnxruntime {ort_big.cpu_us_per_row:.0f} µs CPU/row at batch "
        f"{ORT_BATCH} → ≤ {bound:,.0f} rows/s = {bound / ort_big.rows_per_s:.0%} of in-process onnxruntime "
        f"for any server on this gRPC stack; mdeploy reached {big.result.rps:,.0f} "
        f"({big.result.rps / bound:.0%} of that bound).",
    ]


def _one_line(config: str) -> str:
    return "'" + " ".join(config.split()) + "'"
