"""CPU seconds used by processes, read without psutil.

``/proc/<pid>/stat`` counts every thread of a process (gRPC's pollers, onnxruntime's pool),
which is what a CPU budget per request must include. Its resolution is one clock tick
(10 ms), fine for windows of seconds.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after its closing ")" are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS_PER_S


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy (not idle, not iowait) since boot, all processes.

    Other work on a shared machine shows up as this minus the client's and server's CPU.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS_PER_S


def self_cpu_s() -> float:
    """User + system CPU seconds of this process, at microsecond resolution."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
