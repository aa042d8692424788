"""The event loop the benchmark's own asyncio processes run on.

mdeploy-server runs on uvloop when it is installed (``servers.cli``); the bare gRPC server and
the aio load generator do the same, so the ceiling is measured the way the server runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # optional, as for the server
    uvloop = None  # type: ignore[assignment]

NAME = "uvloop" if uvloop is not None else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)
