"""Where the gateway process spends its CPU under load, and what a change would give (no py-spy).

The real stack (``loadtests.gateway.stack``) with ``mdeploy serve`` run by
``loadtests.gateway.gateway_child``, profiled over one wrk window after a warm-up (not start-up,
not the push):

* default: the event-loop thread's Python stack sampled by CPU time (low overhead), plus ``perf``
  by shared object and the cyclic GC's share when ``perf`` is installed;
* ``--cprofile``: cProfile (call counts; roughly doubles the CPU per request);
* ``--compare``: no profiler; the gateway as shipped, with ``gc.freeze()``, on uvloop and with
  both, at 1, 16 and N in flight, measured as ``bench_gateway`` does, with GC pauses per row.

Both profiling modes also print the CPU per request of each of the process's threads.

Run: ``python -m loadtests.gateway.profile_gateway [--concurrency 64] [--duration 5]
[--cprofile | --compare]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pstats
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from loadtests.gateway import httpload, perf_record
from loadtests.gateway.bench_gateway import digit_row, gateway_target, v1_body
from loadtests.gateway.gateway_child import Variant, start_child_gateway
from loadtests.gateway.httpload import HttpResult
from loadtests.gateway.stack import MODEL, Stack, build_packages, running_stack
from loadtests.server.profile_server import print_top

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# Own time is grouped by these packages; the rest by the folder after site-packages.
_REPO_PACKAGES = ("gateway", "mdeploy", "protos", "servers", "loadtests")

FunctionKey = tuple[str, int, str]
StatsEntry = tuple[int, int, float, float, object]


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, keyed by ``name/tid``."""
    threads: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        threads[f"{name}/{task.name}"] = (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    return threads


def profile_window(
    stack: Stack, profile: Path, concurrency: int, duration_s: int
) -> tuple[HttpResult, dict[str, float]]:
    """One wrk window with the gateway's profiler (and perf, if any) on; the result and each
    thread's CPU seconds."""
    target = gateway_target(stack, v1_body(digit_row()))
    httpload.run_wrk(target, concurrency, 1)  # warm-up
    before = thread_cpu_s(stack.gateway_pid)
    os.kill(stack.gateway_pid, signal.SIGUSR1)
    with perf_record.recording(stack.gateway_pid, profile.with_suffix(".perf")):
        result = httpload.run_wrk(target, concurrency, duration_s)
    os.kill(stack.gateway_pid, signal.SIGUSR2)
    after = thread_cpu_s(stack.gateway_pid)
    _wait_for(profile)
    return result, {name: after[name] - before.get(name, 0.0) for name in after}


def _wait_for(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or path.stat().st_size == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the profiled gateway wrote no profile to {path}")
        time.sleep(0.1)
    time.sleep(0.5)  # dump_stats may still be writing


def package_of(file: str, name: str) -> str:
    """Which package a profiled function belongs to (C functions by their type)."""
    parts = Path(file).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for package in _REPO_PACKAGES:
        if f"/{package}/" in file:
            return package
    if file == "~":  # "<method 'send' of '_socket.socket' objects>"
        return "builtin: " + name.split(" of '")[1].split("'")[0] if " of '" in name else "builtin"
    return "stdlib: " + Path(file).stem


def print_threads(threads: dict[str, float], requests: int) -> None:
    print("gateway process threads over the window (CPU µs/request):")
    for name, cpu_s in sorted(threads.items(), key=lambda item: -item[1]):
        if cpu_s > 0:
            print(f"{1e6 * cpu_s / requests:10.1f}  {name}")


def print_packages(stats: pstats.Stats, requests: int, limit: int = 20) -> None:
    own: dict[str, float] = defaultdict(float)
    entries: dict[FunctionKey, StatsEntry] = stats.stats  # type: ignore[attr-defined]
    for (file, _, name), (_, _, own_s, _, _) in entries.items():
        own[package_of(file, name)] += own_s
    print("main thread's own time by package (µs/request, cProfile's overhead included):")
    for package, seconds in sorted(own.items(), key=lambda item: -item[1])[:limit]:
        print(f"{1e6 * seconds / requests:10.1f}  {package}")


def print_repo_cumulative(stats: pstats.Stats, requests: int, limit: int) -> None:
    """mdeploy's own functions by cumulative time: what each step of a request costs in total."""
    entries: dict[FunctionKey, StatsEntry] = stats.stats  # type: ignore[attr-defined]
    ours = [(key, value) for key, value in entries.items() if package_of(key[0], key[2]) in _REPO_PACKAGES]
    print("mdeploy functions by cumulative time (µs/request; a coroutine counts a call per resumption):")
    print(f"{'cum µs/req':>10} {'own µs/req':>10} {'calls/req':>9}  function")
    for (file, line, name), (_, calls, own, cumulative, _) in sorted(ours, key=lambda kv: -kv[1][3])[:limit]:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}"
        numbers = f"{1e6 * cumulative / requests:10.1f} {1e6 * own / requests:10.1f} {calls / requests:9.2f}"
        print(f"{numbers}  {name} ({where})")


def run_profile(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="mdeploy-profile-gateway-") as folder:
        packages = build_packages(Path(folder) / "packages", [MODEL])
        output = Path(folder) / ("gateway.prof" if args.cprofile else "samples.json")
        variant = (
            Variant(profile=output, uvloop=args.uvloop)
            if args.cprofile
            else Variant(sample=output, uvloop=args.uvloop)
        )
        starter = functools.partial(start_child_gateway, variant)
        with running_stack(Path(folder), packages, starter=starter) as stack:
            result, threads = profile_window(stack, output, args.concurrency, args.duration)
            stack_pid = stack.gateway_pid
        gateway_s = result.pid_cpu_s[0]
        print(
            f"{variant.label}, {args.concurrency} in flight, {'cProfile' if args.cprofile else 'sampled'}: "
            f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, gateway process "
            f"{result.us_per_request(gateway_s):.0f} µs CPU/request ({result.cores(gateway_s):.2f} cores), "
            f"{result.errors} errors"
        )
        print_threads(threads, result.requests)
        if args.cprofile:
            print_cprofile(output, result.requests, args.top)
        else:
            main_s = next(cpu for name, cpu in threads.items() if name.endswith(f"/{stack_pid}"))
            print_samples(Samples.load(output), result.us_per_request(main_s), args.top)
            perf = perf_record.summarize(output.with_suffix(".perf"))
            perf_record.print_summary(perf, result.us_per_request(gateway_s))
        if args.save:
            args.save.write_bytes(output.read_bytes())


def print_cprofile(profile: Path, requests: int, top: int) -> None:
    stats = pstats.Stats(str(profile))
    print_packages(stats, requests)
    print_repo_cumulative(stats, requests, top)
    print_top(profile, requests, top)


@dataclass(frozen=True)
class Samples:
    """The sampler's stacks (outermost frame first, ``file:line:function``) and their counts."""

    interval_s: float
    stacks: list[tuple[tuple[str, ...], int]]

    @classmethod
    def load(cls, path: Path) -> Samples:
        data = json.loads(path.read_text())
        return cls(data["interval_s"], [(tuple(s["stack"]), s["count"]) for s in data["samples"]])

    def inclusive(self) -> Counter[str]:
        """Samples with each function anywhere on the stack (once per stack: recursion counts once)."""
        counts: Counter[str] = Counter()
        for stack, count in self.stacks:
            for frame in set(stack):
                counts[frame] += count
        return counts

    def own(self) -> Counter[str]:
        """Samples with each function on top of the stack."""
        counts: Counter[str] = Counter()
        for stack, count in self.stacks:
            counts[stack[-1]] += count
        return counts

    @property
    def total(self) -> int:
        return sum(count for _, count in self.stacks)


def _frame_name(frame: str) -> str:
    file, line, function = frame.rsplit(":", 2)
    return f"{function} ({Path(file).parent.name}/{Path(file).name}:{line})"


def print_samples(samples: Samples, main_us: float, top: int) -> None:
    """Shares of the samples, as µs of the main thread's measured CPU per request (``main_us``).

    The kernel checks the CPU timer at its tick (4 ms at HZ=250), so fewer samples arrive than
    one per interval; they are still spread by CPU time, so their shares are what counts.
    """
    us = main_us / samples.total
    print(f"{samples.total} samples of the main thread's {main_us:.0f} µs CPU/request")
    by_package: dict[str, float] = defaultdict(float)
    for frame, count in samples.own().items():
        file, _, function = frame.rsplit(":", 2)
        by_package[package_of(file, function)] += count * us
    print("own time by package (µs/request; C calls are charged to the Python function that made them):")
    for package, value in sorted(by_package.items(), key=lambda item: -item[1])[:20]:
        print(f"{value:10.1f}  {package}")
    print("functions by inclusive time (µs/request):")
    for frame, count in samples.inclusive().most_common(top):
        print(f"{count * us:10.1f}  {_frame_name(frame)}")
    print("functions by own time (µs/request):")
    for frame, count in samples.own().most_common(top):
        print(f"{count * us:10.1f}  {_frame_name(frame)}")


@dataclass(frozen=True)
class CompareRow:
    variant: str
    result: HttpResult
    window: tuple[float, float]  # time.time() bounds of the row (warm-up included)


COMPARED = (
    Variant(),
    Variant(gc_freeze=True),
    Variant(uvloop=True),
    Variant(uvloop=True, gc_freeze=True),
)


def run_compare(args: argparse.Namespace) -> None:
    """Each variant of the gateway at 1 and N in flight, with its GC pauses over each row."""
    body = v1_body(digit_row())
    with tempfile.TemporaryDirectory(prefix="mdeploy-compare-gateway-") as folder:
        packages = build_packages(Path(folder) / "packages", [MODEL])
        print(
            f"{'gateway':<36} {'in flight':>9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'µs CPU/req':>10} "
            f"{'others':>6}  GC over the row"
        )
        for index, shipped in enumerate(COMPARED):
            gc_log = Path(folder) / f"gc-{index}.json"
            variant = dataclasses.replace(shipped, gc_log=gc_log)
            rows = compare_variant(Path(folder) / f"variant-{index}", packages, variant, body, args)
            events = json.loads(gc_log.read_text())
            for row in rows:
                print(f"{_compare_cells(row)}  {gc_summary(events, row)}")


def compare_variant(
    folder: Path, packages: list[Path], variant: Variant, body: bytes, args: argparse.Namespace
) -> list[CompareRow]:
    starter = functools.partial(start_child_gateway, variant)
    rows = []
    with running_stack(folder, packages, starter=starter) as stack:
        target = gateway_target(stack, body)
        for concurrency in sorted({1, 16, args.concurrency}):
            started = time.time()
            result = httpload.load(target, concurrency, args.duration, 1, quiet_wait_s=30.0)
            rows.append(CompareRow(variant.label, result, (started, time.time())))
    return rows  # the gateway has exited: its GC log is written


def _compare_cells(row: CompareRow) -> str:
    r = row.result
    return (
        f"{row.variant:<36} {r.concurrency:>9} {r.rps:>7,.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
        f"{r.us_per_request(r.pid_cpu_s[0]):>10.0f} {r.others_cores:>6.2f}"
    )


def gc_summary(events: list[tuple[float, int, float]], row: CompareRow) -> str:
    """Collections per second by generation, the share of time paused, the longest pause."""
    start, end = row.window
    inside = [(generation, pause) for at, generation, pause in events if start <= at <= end]
    seconds = end - start
    rates = "/".join(f"{sum(1 for g, _ in inside if g == gen) / seconds:.0f}" for gen in (0, 1, 2))
    paused = sum(pause for _, pause in inside)
    longest = max((pause for _, pause in inside), default=0.0)
    return f"gen0/1/2 per s {rates}, paused {paused / seconds:.1%}, longest {longest * 1e3:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="profile_gateway", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--concurrency", type=int, default=64)
    add("--duration", type=int, default=5, help="whole seconds profiled (or measured per row)")
    add("--top", type=int, default=30, help="functions listed")
    add("--uvloop", action="store_true", help="profile the gateway on uvloop (see gateway_child)")
    add("--cprofile", action="store_true", help="cProfile (call counts; slows calls) instead of sampling")
    add("--compare", action="store_true", help="no profiler: the gateway as shipped vs gc.freeze() / uvloop")
    add("--save", type=Path, help="also keep the cProfile data here (for pstats callers)")
    args = parser.parse_args(argv)
    httpload.check_wrk()
    if args.compare:
        run_compare(args)
    else:
        run_profile(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
