"""What the benchmarks' printed tables share: PASS/MISS, a table of text then numbers, the CPU model."""

from __future__ import annotations

from rich.table import Table

# Both benchmarks hold the tail to this: a p99 over 3x the p50 means queueing, not work.
P99_OVER_P50 = 3.0


def verdict(ok: bool) -> str:
    return "[green]PASS[/]" if ok else "[red]MISS[/]"


def table(title: str, columns: tuple[str, ...], left: int) -> Table:
    """A table whose first ``left`` columns are text (left-aligned) and the rest numbers."""
    made = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        made.add_column(column, justify="left" if index < left else "right")
    return made


def cpu_info() -> list[str]:
    """The lines of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as file:
            return file.readlines()
    except OSError:
        return []
