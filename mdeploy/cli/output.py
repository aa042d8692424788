"""Where the commands print their tables: stdout, as wide as the terminal or, when piped, as wide
as the table (rich would cut names and dates to 80 columns for a file or a pipe)."""

from __future__ import annotations

import sys

from rich.console import Console

# Wide enough for any table the commands print; rich sizes a table to its content below that.
PIPED_WIDTH = 1000


def table_console() -> Console:
    return Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)
