"""A push in a process of its own that dies (SIGKILL) or freezes (SIGSTOP) at a given phase.

``python -m tests.gateway.crashing_push DATA_DIR BACKEND PACKAGE PHASE kill|stop``: the
recovery tests then open a registry on what it left behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from gateway.registry.records import PushPhase
from tests.gateway.registry_support import running_registry

SIGNALS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


async def push_until(
    data_dir: Path, backend: str, package: Path, phase: PushPhase, how: signal.Signals
) -> None:
    def observe(reached: PushPhase) -> None:
        if reached is phase:
            os.kill(os.getpid(), how)

    async with running_registry(data_dir, [backend], reconcile_interval_s=3600) as rig:
        await rig.push(package, "key:crasher", observe=observe)


def main(argv: list[str]) -> int:
    data_dir, backend, package, phase, how = argv
    asyncio.run(push_until(Path(data_dir), backend, Path(package), PushPhase(phase), SIGNALS[how]))
    print(f"the push finished without being stopped at {phase}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
