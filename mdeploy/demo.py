"""``mdeploy serve --demo``: build the digits demo packages and push them to the running gateway.

This is the CLI layer's work, handed to the gateway's ``serve`` as its start-up step: the
gateway never imports the examples, and the pushes go through the same client as ``mdeploy push``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx

from gateway.local import ADMIN_KEY_FILE, AfterStart
from mdeploy.client import ClientConfig, GatewayClient


def push_demo_packages(base_url: str, admin_key: str, data_dir: Path) -> list[str]:
    """Build the digits demo packages and push them through the gateway; the pushed model names."""
    from examples.digits import build_demo_packages

    config = ClientConfig(base_url, admin_key)
    names = []
    with GatewayClient(config, timeout=httpx.Timeout(300)) as client:
        for package in build_demo_packages(data_dir / "demo"):
            names.append(str(client.push(package)["name"]))
    return names


def curl_example(base_url: str, data_dir: Path, model: str) -> str:
    """A curl line that predicts one real digit with the admin key of ``data_dir``."""
    from examples.digits import load_data

    row = [int(v) for v in load_data().x_test[0]]
    body = '{"instances": [' + str(row).replace(" ", "") + "]}"
    return (
        f'curl -s -H "Authorization: Bearer $(cat {data_dir / ADMIN_KEY_FILE})" '
        f"-d '{body}' '{base_url}/v1/models/{model}:predict?labels=true'"
    )


def quiet_libraries() -> None:
    """The demo's own lines, not every HTTP request of its client or TensorFlow's notes."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TensorFlow loads: C++ INFO off
    for name in ("httpx", "httpcore", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)


def demo_step(data_dir: Path) -> AfterStart:
    """The start-up step that pushes the demo models and prints a curl line for the first one."""

    def push_the_demo_models(base_url: str, admin_key: str) -> None:
        quiet_libraries()
        print("building and pushing the demo models (digits: scikit-learn and Keras)...", flush=True)
        names = push_demo_packages(base_url, admin_key, data_dir)
        print(
            f"pushed {', '.join(names)}; try:\n\n  {curl_example(base_url, data_dir, names[0])}\n", flush=True
        )

    return push_the_demo_models
