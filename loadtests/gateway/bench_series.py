"""What the per-version time series cost the gateway: SeriesStore in process, no network.

The request path: ``SeriesStore.record`` per request, and the background flush (one KLL update
per version and resolution for the batch), with 64 requests per flush as at 64 in flight; in µs
of CPU per request. Then a console's read: two gateway processes (two stores on one SQLite
gateway database) whose two versions have traffic in every bucket of the hour and the day, each
publishing; the read merges its own buckets and the other process's (``window=1h`` and ``24h``,
uncached), in ms of CPU, and what one console polling both windows every ``--poll-s`` costs as a
share of one core. Last, the models page's glance (``GET /v1/series/summary``): ``--models``
models of two versions each with traffic in every 10 s bucket of the hour in both processes, the
last 5 minutes summed per model, uncached, in µs of CPU per call and per model.

Run: ``python -m loadtests.gateway.bench_series [--requests 200000] [--poll-s 5] [--models 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gateway.database.engine import SQLiteDatabase
from gateway.db import open_database
from gateway.drift.shared import DatabaseBuckets
from gateway.timeseries.series import RESOLUTIONS, SeriesStore

IN_FLIGHT = 64
VERSIONS = ("1", "2")


def request_path(requests: int) -> tuple[float, float]:
    """(record µs, flush µs) per request."""
    store = SeriesStore()
    record_s = flush_s = 0.0
    for batch in range(0, requests, IN_FLIGHT):
        started = time.process_time()
        for i in range(IN_FLIGHT):
            store.record("m", VERSIONS[i & 1], i != batch % IN_FLIGHT, 0.002 + i * 1e-5)
        record_s += time.process_time() - started
        started = time.process_time()
        store.flush()
        flush_s += time.process_time() - started
    return record_s / requests * 1e6, flush_s / requests * 1e6


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def read_cost(folder: Path, reads: int) -> dict[str, float]:
    """CPU ms per uncached read of each window, with two processes' full day of buckets."""
    databases = [SQLiteDatabase.open(open_database(folder / "gateway.sqlite"), owned=True) for _ in range(2)]
    real_now = time.time()
    clock = Clock(real_now - RESOLUTIONS["24h"].span_s)
    stores = [SeriesStore(DatabaseBuckets(db), clock=clock, cache_s=0) for db in databases]
    try:
        while clock.now <= real_now:  # a request per version every 10 s, all day, in both processes
            for store in stores:
                for version in VERSIONS:
                    for i in range(IN_FLIGHT // 8):
                        store.record("m", version, True, 0.002 + i * 1e-4)
                store.flush()
            clock.now += 10
        for store in stores:
            await store.publish()
        clock.now = real_now
        costs: dict[str, float] = {}
        for window in RESOLUTIONS:
            await stores[0].series("m", VERSIONS, window)  # warm
            started = time.process_time()
            for _ in range(reads):
                await stores[0].series("m", VERSIONS, window)
            costs[window] = (time.process_time() - started) / reads * 1e3
        return costs
    finally:
        for store in stores:
            await store.close()
        for db in databases:
            await db.close()


async def glance_cost(folder: Path, models: int, reads: int) -> float:
    """CPU µs per uncached glance at ``models`` models, with two processes' full hour of buckets."""
    databases = [SQLiteDatabase.open(open_database(folder / "glance.sqlite"), owned=True) for _ in range(2)]
    real_now = time.time()
    hour = RESOLUTIONS["1h"]
    clock = Clock(real_now - hour.span_s)
    stores = [SeriesStore(DatabaseBuckets(db), clock=clock, cache_s=0) for db in databases]
    names = [f"model-{index}" for index in range(models)]
    try:
        while clock.now <= real_now:
            for store in stores:
                for name in names:
                    for version in VERSIONS:
                        store.record(name, version, True, 0.002)
                store.flush()
            clock.now += hour.bucket_s
        for store in stores:
            await store.publish()
        clock.now = real_now
        served = {name: VERSIONS for name in names}
        await stores[0].glance(served)  # warm
        started = time.process_time()
        for _ in range(reads):
            await stores[0].glance(served)
        return (time.process_time() - started) / reads * 1e6
    finally:
        for store in stores:
            await store.close()
        for db in databases:
            await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=5)
    parser.add_argument("--poll-s", type=float, default=5.0)
    parser.add_argument("--models", type=int, default=20, help="models in the glance (2 versions each)")
    parser.add_argument("--glance-poll-s", type=float, default=10.0, help="the models page's refresh")
    args = parser.parse_args(argv)
    record_us, flush_us = request_path(args.requests)
    with tempfile.TemporaryDirectory() as folder:
        reads = asyncio.run(read_cost(Path(folder), args.reads))
        glance_us = asyncio.run(glance_cost(Path(folder), args.models, args.reads))
    console = Console()
    path = Table(title=f"Series on the request path ({IN_FLIGHT} requests per flush)")
    for column in ("record µs/request", "flush µs/request", "total µs/request"):
        path.add_column(column, justify="right")
    path.add_row(f"{record_us:.2f}", f"{flush_us:.2f}", f"{record_us + flush_us:.2f}")
    console.print(path)
    read = Table(title=f"A console's read: 2 processes x {len(VERSIONS)} versions, every bucket filled")
    for column in ("window", "CPU ms per read", f"share of a core, polled every {args.poll_s:g} s"):
        read.add_column(column, justify="right")
    for window, ms in reads.items():
        read.add_row(window, f"{ms:.1f}", f"{ms / (args.poll_s * 1e3):.2%}")
    console.print(read)
    glance = Table(
        title=f"The models page's glance (5m): 2 processes x {args.models} models x {len(VERSIONS)} versions"
    )
    columns = (
        "models",
        "CPU µs per glance",
        "µs per model",
        f"share of a core, polled every {args.glance_poll_s:g} s",
    )
    for column in columns:
        glance.add_column(column, justify="right")
    glance.add_row(
        str(args.models),
        f"{glance_us:.0f}",
        f"{glance_us / max(args.models, 1):.0f}",
        f"{glance_us / (args.glance_poll_s * 1e6):.2%}",
    )
    console.print(glance)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
