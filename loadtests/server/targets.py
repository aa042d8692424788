"""What the benchmark serves: the two models, their batching configs, and the servers' processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.server_process import start_server_process
from examples.onnx_models import mlp, write_version
from loadtests.common.paths import ROOT
from loadtests.server.bare_server import LISTENING


@dataclass(frozen=True)
class ModelSpec:
    name: str
    sizes: tuple[int, ...]
    kind: str  # what the model stands for in the report

    @property
    def width(self) -> int:
        return self.sizes[0]


TINY = ModelSpec("tiny", (64, 64, 10), "tiny MLP 64→64→10")
BIG = ModelSpec("big", (1024, 2048, 2048, 10), "compute-bound MLP 1024→2048→2048→10")


@dataclass(frozen=True)
class Batching:
    """One config.pbtxt a user could write; ``label`` is how the report names it."""

    label: str
    text: str


def _config(dynamic_batching: str) -> str:
    return f"max_batch_size: 64\ndynamic_batching {{ {dynamic_batching} }}\n"


# Delay 0 is the default a user gets by writing `dynamic_batching {}`: no request waits for
# company, and requests that arrive while the model runs form the next batch. That is the
# config a user would write for both models (see the sweep in the report for why).
DELAY_0 = Batching("delay 0", _config(""))
DELAY_500 = Batching("delay 500µs", _config("max_queue_delay_microseconds: 500"))
PREFERRED = Batching(
    "preferred [32,64], delay 5ms",
    _config("preferred_batch_size: [32, 64] max_queue_delay_microseconds: 5000"),
)
CHOSEN = {TINY.name: DELAY_0, BIG.name: DELAY_0}
BIG_SWEEP = (DELAY_0, DELAY_500, PREFERRED)
# A server flag tried with the compute-bound model: onnxruntime's intra-op pool defaults to one
# thread per core, which on 2 cores competes with the event loop that feeds it.
ONE_ORT_THREAD = ("--intra-op-threads", "1")


def served_name(model: ModelSpec, batching: Batching) -> str:
    """Each (model, config) pair is its own model in one repository: one server serves all."""
    suffix = {DELAY_0.label: "d0", DELAY_500.label: "d500", PREFERRED.label: "pref"}[batching.label]
    return f"{model.name}_{suffix}"


def write_repository(root: Path, entries: list[tuple[ModelSpec, Batching]]) -> None:
    for model, batching in entries:
        write_version(root, served_name(model, batching), 1, mlp(list(model.sizes), seed=0), batching.text)


@dataclass(frozen=True)
class Endpoint:
    address: str
    pid: int


@contextmanager
def mdeploy_server(repository: Path, extra_args: tuple[str, ...] = ()) -> Iterator[Endpoint]:
    """mdeploy-server with its default settings (the way `mdeploy-server` is started by users)."""
    server = start_server_process(
        [
            "--grpc-port",
            "0",
            "--grpc-address",
            "127.0.0.1",
            "--model-repository",
            str(repository),
            *extra_args,
        ]
    )
    try:
        yield Endpoint(server.address, server.process.pid)
    finally:
        server.stop(timeout_s=10)


@contextmanager
def listening_child(module: str, args: tuple[str, ...], listening: str) -> Iterator[Endpoint]:
    """``python -m module args`` until the block ends; its address from the line it prints
    once it listens (``<listening> HOST:PORT``)."""
    command = [sys.executable, "-m", module, *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if listening not in line:
            raise RuntimeError(f"{module} did not start: {line!r}")
        yield Endpoint(line.split()[-1], process.pid)
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def bare_server() -> AbstractContextManager[Endpoint]:
    return listening_child("loadtests.server.bare_server", ("--port", "0"), LISTENING)
