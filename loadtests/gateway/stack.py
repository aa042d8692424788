"""A running mdeploy for the gateway's load tests: inference server, gateway, demo models, a key.

``running_stack`` starts ``mdeploy-server`` (explicit model control, as a deployment runs it) and
``mdeploy serve`` pointed at it, pushes demo packages through the admin API the way a user does,
makes a predict-scope API key, and waits until the first model answers a prediction.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.server_process import start_server_process
from gateway.auth.keys import with_keys
from gateway.process import GatewayProcess, start_gateway_process
from gateway.settings import GatewaySettings
from mdeploy.client import ClientConfig, GatewayClient

MODEL = "digits-sklearn"
"""The model the benchmark calls: StandardScaler + LogisticRegression, ``pixels`` FP32 [-1, 64]."""
ALL_MODELS = ("digits-sklearn", "digits-keras")

# Rate limits stay in the request path (their cost is measured) but must never answer 429.
LOAD_TEST_ENV = {
    "MDEPLOY_RATE_LIMIT_PREDICT": "1000000000/minute",
    "MDEPLOY_RATE_LIMIT_FEEDBACK": "1000000000/minute",
}
PUSH_TIMEOUT_S = 300.0  # a push verifies the package: onnxruntime loads it, samples reproduce
READY_TIMEOUT_S = 60.0

GatewayStarter = Callable[[Path, list[str], dict[str, str]], GatewayProcess]
"""Starts ``mdeploy serve`` (data folder, backends, environment); the profiler swaps in its own."""


def start_gateway(data_dir: Path, backends: list[str], env: dict[str, str]) -> GatewayProcess:
    return start_gateway_process(data_dir, backends, env=env)


@dataclass(frozen=True)
class Stack:
    url: str
    key: str
    """An API key with the predict and feedback scopes (not admin: what a web app holds)."""
    admin_key: str
    gateway_pid: int
    server_pid: int
    server_address: str
    versions: Mapping[str, str]
    """Model name → the version the push made live."""


def build_packages(folder: Path, models: Sequence[str]) -> list[Path]:
    """The demo packages of ``models`` (both are trained: ~10 s of CPU)."""
    from examples.digits import build_demo_packages  # imports sklearn and TensorFlow: only when needed

    return [path for path in build_demo_packages(folder) if path.stem in models]


@contextmanager
def running_stack(
    work_dir: Path,
    packages: Sequence[Path],
    env: Mapping[str, str] | None = None,
    starter: GatewayStarter = start_gateway,
) -> Iterator[Stack]:
    """Server + gateway with ``packages`` pushed; both are stopped on exit."""
    server = start_server_process(
        ["--grpc-port", "0", "--grpc-address", "127.0.0.1", "--model-control-mode", "explicit"]
    )
    try:
        gateway_env = {**LOAD_TEST_ENV, **(env or {})}
        gateway = starter(work_dir / "gateway", [server.address], gateway_env)
        try:
            versions = dict(push(gateway.url, gateway.admin_key, package) for package in packages)
            key = create_key(work_dir / "gateway")
            for model in versions:
                wait_until_serving(gateway.url, key, model)
            yield Stack(
                gateway.url,
                key,
                gateway.admin_key,
                gateway.process.pid,
                server.process.pid,
                server.address,
                versions,
            )
        except Exception:
            # Whatever failed, the two logs usually say why (a crash under load, a refused push).
            print(f"--- gateway log (tail) ---\n{_tail(gateway.log)}", file=sys.stderr)
            print(f"--- inference server log (tail) ---\n{_tail(server.log)}", file=sys.stderr)
            raise
        finally:
            gateway.stop(timeout_s=10)
    finally:
        server.stop(timeout_s=10)


def _tail(log: str, lines: int = 40) -> str:
    return "\n".join(log.splitlines()[-lines:])


def push(url: str, admin_key: str, package: Path) -> tuple[str, str]:
    """Push ``package`` as ``mdeploy push`` does; its model name and version."""
    config = ClientConfig(url, admin_key)
    with GatewayClient(config, timeout=httpx.Timeout(PUSH_TIMEOUT_S)) as client:
        pushed = client.push(package)
    return str(pushed["name"]), str(pushed["version"])


def create_key(data_dir: Path) -> str:
    """A predict + feedback key, written to the gateway's database as ``mdeploy keys create`` does."""
    settings = GatewaySettings(data_dir=data_dir)
    return with_keys(settings, lambda keys: keys.create(["predict", "feedback"], name="loadtest")).key


def wait_until_serving(url: str, key: str, model: str) -> None:
    """Until ``model`` answers a prediction (a push returns before every backend has loaded it)."""
    body = {"instances": [[0.0] * 64]}
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        response = httpx.post(f"{url}/v1/models/{model}:predict", json=body, headers=headers, timeout=10)
        if response.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model} does not answer: {response.status_code} {response.text}")
        time.sleep(0.2)
