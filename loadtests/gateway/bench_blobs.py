"""Package blob stores: put and read throughput of one large package, per store.

Each row puts a file of random bytes (consumed, as the registry's upload is) and then reads it
through another host's store (a fresh cache: every chunk comes from the database, hashed,
written and fsynced). "stall" is the longest the event loop went without running a 1 ms
ticker meanwhile: SQLite's statements run on the loop, PostgreSQL's are awaited. The folder
store is the reference (a rename; its read is the file itself). PostgreSQL is a throwaway
cluster with default durability (fsync on) unless ``--postgres-url`` names one; an S3 row is
added for ``--s3-endpoint`` (its bucket must exist). Run:

    python -m loadtests.gateway.bench_blobs [--size-mib 100] [--chunk-kib 1024] [--batch-mib 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from core.ports import free_port
from gateway.database.engine import Database, PostgresDatabase, SQLiteDatabase
from gateway.db import open_database
from gateway.registry.blobs import BlobStore, DatabaseBlobStore, FolderBlobStore, MiB
from loadtests.common.tables import table


@dataclass
class Timed:
    seconds: float
    stall_ms: float


async def timed(work: Callable[[], Awaitable[object]]) -> Timed:
    """Run ``work`` while a ticker measures the longest gap between its 1 ms ticks."""
    longest = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await work()
    seconds = time.perf_counter() - started
    done.set()
    await ticker
    return Timed(seconds, longest * 1000)


def random_file(path: Path, size: int) -> str:
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        for offset in range(0, size, MiB):
            piece = os.urandom(min(MiB, size - offset))
            hasher.update(piece)
            out.write(piece)
    return hasher.hexdigest()


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL (Debian's postgresql package) on loopback, fsync on: its URL."""
    folder = Path(tempfile.mkdtemp(prefix="mdeploy-bench-postgres-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres", "postgres")
    port, data = free_port(), folder / "data"
    initdb = [*as_user, _bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    subprocess.run(initdb, check=True, capture_output=True)
    command = [
        *as_user,
        _bin("postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
    ]
    command += ["-c", f"unix_socket_directories={folder}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
        deadline = time.monotonic() + 30
        while subprocess.run(probe, capture_output=True, check=False).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("postgres did not start")
            time.sleep(0.05)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package")
    return str(found)


@contextlib.asynccontextmanager
async def opened(kind: str, work: Path, postgres_url: str | None) -> AsyncIterator[Database | None]:
    if kind in ("folder", "s3"):
        yield None
    elif kind == "sqlite":
        connection = open_database(work / "gateway.sqlite")
        database = SQLiteDatabase.open(connection)
        yield database
        await database.close()
        connection.close()
    else:
        assert postgres_url is not None
        postgres = await PostgresDatabase.open(postgres_url)
        yield postgres
        await postgres.close()


async def measure(
    kind: str, args: argparse.Namespace, work: Path, postgres_url: str | None
) -> tuple[Timed, Timed]:
    async with opened(kind, work, postgres_url) as database:

        def store(host: str) -> BlobStore:
            if kind == "s3":
                from gateway.registry.s3_blobs import S3BlobStore, s3_client  # the s3 extra: only here

                client = s3_client(args.s3_endpoint, args.s3_access_key, args.s3_secret_key, "us-east-1")
                return S3BlobStore(client, args.s3_bucket, work / host, prefix="bench/")
            if database is None:
                return FolderBlobStore(work / "packages")
            return DatabaseBlobStore(
                database, work / host, chunk_size=args.chunk_kib * 1024, batch_bytes=args.batch_mib * MiB
            )

        upload = work / "upload"
        digest = random_file(upload, args.size_mib * MiB)
        writer = store("writer-cache")
        put = await timed(lambda: writer.put(upload, digest))
        reader = store("reader-cache")
        read = await timed(lambda: reader.local_path(digest))
        assert await reader.contains(digest)
        await writer.remove(digest)
        return put, read


def rate(size_mib: int, runs: list[Timed]) -> str:
    """Best / median MiB/s: the best is the least disturbed run on a shared machine."""
    rates = sorted(size_mib / run.seconds for run in runs)
    return f"{rates[-1]:.0f} / {statistics.median(rates):.0f}"


async def run(args: argparse.Namespace) -> None:
    console = Console()
    with contextlib.ExitStack() as stack:
        url = args.postgres_url or stack.enter_context(postgres_cluster())
        rows = table(
            f"{args.size_mib} MiB package, {args.chunk_kib} KiB chunks, {args.batch_mib} MiB per "
            f"transaction, {args.repeat} runs; {os.cpu_count()} cores",
            ("store", "put MiB/s best / median", "put stall ms", "read MiB/s best / median", "read stall ms"),
            1,
        )
        for kind in ["folder", "sqlite", "postgresql", *(["s3"] if args.s3_endpoint else [])]:
            puts, reads = [], []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory(prefix="mdeploy-bench-blobs-", dir=args.work_dir) as work:
                    put, read = await measure(kind, args, Path(work), url)
                puts.append(put)
                reads.append(read)
            rows.add_row(
                kind,
                rate(args.size_mib, puts),
                f"{max(run.stall_ms for run in puts):.0f}",
                rate(args.size_mib, reads) if kind != "folder" else "(the file)",
                f"{max(run.stall_ms for run in reads):.0f}",
            )
        console.print(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--chunk-kib", type=int, default=1024)
    parser.add_argument("--batch-mib", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres-url", help="an existing PostgreSQL (else a throwaway cluster is started)")
    parser.add_argument("--s3-endpoint", help="also an S3-compatible server (needs the s3 extra)")
    parser.add_argument("--s3-bucket", default="mdeploy-bench")
    parser.add_argument("--s3-access-key")
    parser.add_argument("--s3-secret-key")
    parser.add_argument("--work-dir", help="where the files go (default: the system's temporary folder)")
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
