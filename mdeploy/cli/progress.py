"""Progress of the slow steps (conversion, parity) on stderr, so stdout stays for results."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from rich.console import Console


class RichSteps:
    """A spinner while a step runs, then a line with a check mark and its duration."""

    def __init__(self, console: Console) -> None:
        self.console = console

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            with self.console.status(f"{description}..."):
                yield
        except BaseException:
            self.console.print(f"[red]✗[/] {description}")
            raise
        self.console.print(f"[green]✓[/] {description} [dim]({time.perf_counter() - start:.1f}s)[/]")


class QuietSteps:
    """No output (``--quiet``)."""

    def step(self, description: str) -> AbstractContextManager[None]:
        return nullcontext()
