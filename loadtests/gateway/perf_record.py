"""Linux ``perf`` over a process for one window: where its CPU goes below Python.

Python-level samplers charge a C call to the Python function that made it, and the cyclic
garbage collector to whichever allocation set it off. ``perf record`` sees the C side: which
shared object (the interpreter, sqlite, grpc's Cython core, numpy, the kernel) and how much of
the interpreter's time is the collector (``gc_collect_main`` and the ``*traverse``/``visit_*``
functions it calls). Optional: without ``perf`` (or without permission) nothing is recorded.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The cyclic collector's own functions in CPython 3.11 (gcmodule.c) and the tp_traverse
# callbacks it drives; all of their time is collection.
_GC_SYMBOL = re.compile(r"^(gc_collect_main|visit_decref|visit_reachable|move_unreachable|\w+_traverse)$")
_LINE = re.compile(r"^\s*([\d.]+)%\s+(?:\[[.k]\]\s+)?(.+?)\s*$")


@dataclass(frozen=True)
class PerfSummary:
    by_object: list[tuple[float, str]]  # % of samples, shared object
    gc_percent: float


@contextmanager
def recording(pid: int, output: Path) -> Iterator[bool]:
    """``perf record`` of ``pid`` while the block runs; yields whether it is recording."""
    perf = shutil.which("perf")
    if perf is None:
        yield False
        return
    command = [perf, "record", "-F", "999", "-o", str(output), "-p", str(pid)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield True
    finally:
        process.send_signal(signal.SIGINT)  # perf writes its file on SIGINT
        process.wait(30)


def summarize(output: Path) -> PerfSummary | None:
    if not output.exists():
        return None
    by_object = _report(output, "dso")
    gc = sum(share for share, symbol in _report(output, "sym") if _GC_SYMBOL.match(symbol))
    return PerfSummary(by_object, gc)


def _report(output: Path, key: str) -> list[tuple[float, str]]:
    command = ["perf", "report", "-i", str(output), "--no-children", "--sort", key, "--stdio", "-g", "none"]
    text = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False).stdout
    rows = [_LINE.match(line) for line in text.splitlines() if not line.startswith("#")]
    return [(float(m.group(1)), m.group(2)) for m in rows if m]


def print_summary(summary: PerfSummary | None, us_per_request: float, limit: int = 8) -> None:
    if summary is None:
        print("perf: not available here (install linux-perf); C-level shares skipped")
        return
    print("perf: gateway process CPU by shared object (µs/request):")
    for share, name in summary.by_object[:limit]:
        print(f"{share * us_per_request / 100:10.1f}  {share:5.1f}%  {name}")
    print(
        f"perf: cyclic garbage collector (gc_collect_main + traverse/visit functions): "
        f"{summary.gc_percent:.1f}% = {summary.gc_percent * us_per_request / 100:.0f} µs/request"
    )
