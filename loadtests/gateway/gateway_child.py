"""``mdeploy serve`` in a child the profiler controls: the product's code, with switches.

* ``--profile PATH``: the main thread (event loop, every request's Python code) is profiled with
  cProfile between SIGUSR1 and SIGUSR2, and the profile written to PATH on SIGUSR2.
* ``--sample PATH``: instead, the main thread's Python stack is sampled every millisecond of the
  process's CPU time (SIGPROF), between the same signals; the stacks and their counts are written
  to PATH as JSON. Sampling does not slow each call as cProfile does (cProfile roughly doubles
  the gateway's CPU per request and inflates small functions most), so its shares are the fair ones.
* ``--uvloop``: uvloop's event-loop policy is installed first. ``gateway.local.serve`` runs
  ``uvicorn.Server.serve()`` under ``asyncio.run``, so its ``Config(loop="uvloop")`` is never
  applied (only ``Server.run()`` applies it) and the gateway runs on the stdlib loop; this switch
  measures what applying it would give, without editing the product.
* ``--gc-freeze``: ``gc.freeze()`` once the gateway's modules are imported, so the cyclic GC's
  full collections stop walking the ~76,000 objects of the imported libraries.
* ``--gc-log PATH``: every collection's end time, generation and pause, written to PATH as JSON
  when the process exits.

Run by :func:`start_child_gateway`; by hand:
``python -m loadtests.gateway.gateway_child [--uvloop] -- serve ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import cProfile
import gc
import json
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from core.child_process import spawn
from gateway.process import GatewayProcess
from loadtests.common.paths import ROOT
from loadtests.gateway.bare_http import RUNNING


@dataclass(frozen=True)
class Variant:
    """How the child runs the gateway."""

    profile: Path | None = None
    sample: Path | None = None
    gc_log: Path | None = None
    uvloop: bool = False
    gc_freeze: bool = False

    @property
    def label(self) -> str:
        changes = [*(["uvloop"] if self.uvloop else []), *(["gc.freeze()"] if self.gc_freeze else [])]
        return f"gateway + {' + '.join(changes)}" if changes else "gateway as shipped"

    def args(self) -> list[str]:
        args = [*(["--uvloop"] if self.uvloop else []), *(["--gc-freeze"] if self.gc_freeze else [])]
        for flag, path in (("--profile", self.profile), ("--sample", self.sample), ("--gc-log", self.gc_log)):
            if path is not None:
                args += [flag, str(path)]
        return args


def start_child_gateway(
    variant: Variant, data_dir: Path, backends: list[str], env: dict[str, str], grpc_port: int = 0
) -> GatewayProcess:
    """``mdeploy serve`` with the arguments ``gateway.process`` gives it, run by this module.

    uvicorn logs "running on" once the app has started, so the gateway answers from then on.
    """
    serve = ["serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", "0"]
    serve += ["--grpc-port", str(grpc_port)]
    serve += [arg for backend in backends for arg in ("--backend", backend)]
    command = [sys.executable, "-m", "loadtests.gateway.gateway_child", *variant.args(), "--", *serve]
    child, running = spawn(command, RUNNING, env=env, timeout_s=120, cwd=ROOT)
    return GatewayProcess(child.process, child.log_lines, child.log_reader, running.group(1), data_dir)


def install_profiler(profile: Path) -> None:
    """SIGUSR1 starts profiling, SIGUSR2 stops it and writes ``profile``."""
    profiler = cProfile.Profile()

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()  # Python runs signal handlers in the main thread: the event loop's.

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(profile)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


SAMPLE_INTERVAL_S = 0.001


class StackSampler:
    """Counts the main thread's Python stacks at each SIGPROF (every ms of the process's CPU).

    Python runs the handler in the main thread at the next bytecode, with that thread's frame:
    time in a C call is charged to the Python function that made it, which is what we want.
    A tick while the loop waits in epoll shows as ``select``: CPU of another thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stacks: Counter[tuple[str, ...]] = Counter()

    def install(self) -> None:
        signal.signal(signal.SIGPROF, self._sample)
        signal.signal(signal.SIGUSR1, lambda signum, frame: self._timer(SAMPLE_INTERVAL_S))
        signal.signal(signal.SIGUSR2, lambda signum, frame: self._stop())

    def _timer(self, interval_s: float) -> None:
        signal.setitimer(signal.ITIMER_PROF, interval_s, interval_s)

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        stack: list[str] = []
        while frame is not None:
            code = frame.f_code
            stack.append(f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}")
            frame = frame.f_back
        self.stacks[tuple(reversed(stack))] += 1

    def _stop(self) -> None:
        self._timer(0)
        samples = [{"stack": list(stack), "count": count} for stack, count in self.stacks.items()]
        self.path.write_text(json.dumps({"interval_s": SAMPLE_INTERVAL_S, "samples": samples}))


class GcLog:
    """(end time, generation, pause seconds) of every collection, written at exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[tuple[float, int, float]] = []
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._callback)
        atexit.register(self._write)  # uvicorn exits normally on SIGTERM, so this runs

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        else:
            self.events.append((time.time(), info["generation"], now - self._started))

    def _write(self) -> None:
        self.path.write_text(json.dumps(self.events))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway_child", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--sample", type=Path)
    parser.add_argument("--gc-log", type=Path)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--gc-freeze", action="store_true")
    parser.add_argument("mdeploy_args", nargs="+")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.profile:
        install_profiler(args.profile)
    elif args.sample:
        StackSampler(args.sample).install()
    if args.gc_log:
        GcLog(args.gc_log).install()
    from mdeploy import cli  # after the policy: nothing may create a loop before it

    if args.gc_freeze:
        gc.freeze()  # gateway.process (imported above) has loaded gateway.local and the app
    return cli.main(args.mdeploy_args)


if __name__ == "__main__":
    sys.exit(main())
