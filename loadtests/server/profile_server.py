"""Where mdeploy-server's event-loop thread spends its time under load (cProfile, no py-spy).

Starts the real server (``servers.cli.main``, default settings) in a child process whose
main thread is profiled only between SIGUSR1 and SIGUSR2, i.e. over the load generator's
measurement window (not start-up), and prints the functions with the most own time, per
request. cProfile sees only the main thread, which is the one that runs every request's
Python code; work in the executor threads (onnxruntime) shows in the model statistics.

Run: ``python -m loadtests.server.profile_server [--model tiny|big] [--concurrency 64] [--duration 5]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from core.child_process import spawn
from core.server_process import LISTENING, ServerProcess
from loadtests.common.paths import ROOT
from loadtests.server.bench_server import Plan, load
from loadtests.server.statistics import model_counters
from loadtests.server.targets import BIG, CHOSEN, TINY, Endpoint, served_name, write_repository
from servers import cli


def serve_profiled(profile: Path, server_args: list[str]) -> int:
    """In the child: the real server; SIGUSR1 starts profiling, SIGUSR2 stops and writes it."""
    profiler = cProfile.Profile()

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()  # Python runs signal handlers in the main thread: the loop's thread.

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(profile)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    return cli.main(server_args)


def start_profiled(repository: Path, profile: Path) -> ServerProcess:
    args = ["--grpc-port", "0", "--grpc-address", "127.0.0.1", "--model-repository", str(repository)]
    command = [
        sys.executable,
        "-m",
        "loadtests.server.profile_server",
        "--serve-profiled",
        str(profile),
        "--",
        *args,
    ]
    child, announced = spawn(command, LISTENING, timeout_s=60, log_to_stderr=True, cwd=ROOT)
    return ServerProcess.started(child, announced, 60)


def profile_window(server: ServerProcess, plan: Plan) -> None:
    """Profile the server over the generator's window (it starts after ``plan.warmup_s``)."""
    time.sleep(plan.warmup_s + 0.5)  # the generator process also needs ~0.5 s to start
    server.process.send_signal(signal.SIGUSR1)
    time.sleep(plan.duration_s - 1.0)
    server.process.send_signal(signal.SIGUSR2)


def print_top(profile: Path, requests: int, limit: int) -> None:
    stats = pstats.Stats(str(profile))
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    total = sum(value[2] for _, value in entries)
    per_request = 1e6 / requests
    print(f"main-thread own time {total * per_request:.0f} µs/request, {requests} requests (cProfile adds)")
    # A coroutine counts one call per resumption, so its calls/request can exceed 1.
    print(f"{'own µs/req':>10} {'cum µs/req':>10} {'calls/req':>9}  function")
    for (file, line, name), (_, calls, own, cumulative, _) in entries[:limit]:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        row = f"{own * per_request:10.1f} {cumulative * per_request:10.1f} {calls / requests:9.2f}"
        print(f"{row}  {name} ({where})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="profile_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=[TINY.name, BIG.name], default=TINY.name)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--save", type=Path, help="also keep the cProfile data here (for pstats callers)")
    parser.add_argument("--serve-profiled", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("server_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_profiled:
        return serve_profiled(args.serve_profiled, args.server_args)
    model = TINY if args.model == TINY.name else BIG
    batching = CHOSEN[model.name]
    plan = Plan((args.concurrency,), args.duration, 1.0, 0.0, "future", False, False)
    with tempfile.TemporaryDirectory(prefix="mdeploy-profile-") as folder:
        write_repository(Path(folder), [(model, batching)])
        profile = Path(folder) / "server.prof"
        server = start_profiled(Path(folder), profile)
        name = served_name(model, batching)
        try:
            profiler = threading.Thread(target=profile_window, args=(server, plan))
            profiler.start()
            before = model_counters(server.address, name)
            result = load(
                Endpoint(server.address, server.process.pid), name, model.width, args.concurrency, plan
            )
            profiler.join()
            counters = model_counters(server.address, name) - before
        finally:
            server.stop(timeout_s=30)
        print(
            f"{model.kind}, {args.concurrency} in flight, profiled: {result.rps:,.0f} req/s, "
            f"p50 {result.p50_ms:.1f} ms, mean batch {counters.mean_batch:.2f}"
        )
        # The profiled span is (duration - 1) s of the window: scale requests to it.
        print_top(profile, int(result.rps * (args.duration - 1.0)), args.top)
        if args.save:
            args.save.write_bytes(profile.read_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
