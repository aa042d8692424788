"""``mdeploy serve --demo``: build the digits demo packages and push them to the running gateway,
then leave something to look at in the console: a canary between two versions of
``digits-sklearn`` and a short burst of traffic with feedback.

This is the CLI layer's work, handed to the gateway's ``serve`` as its start-up step: the
gateway never imports the examples, and every call goes through the same client as ``mdeploy``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.local import ADMIN_KEY_FILE, AfterStart
from mdeploy.client import ClientConfig, GatewayClient

CANARY_MODEL = "digits-sklearn"
CANARY_WEIGHTS = (80.0, 20.0)
"""The stable version's weight, the candidate's."""
DEMO_REQUESTS = 40
"""Predictions per demo model sent at start-up, each with feedback: the charts start with data."""


@dataclass(frozen=True)
class DemoState:
    names: list[str]
    """The demo models, in the order pushed."""
    canary: str
    """What serves the canary model, in the gateway's words (``canary 1:80%/2:20% (stable 1)``)."""
    requests: int
    """Predictions sent, each with a reward."""


def push_demo_packages(base_url: str, admin_key: str, data_dir: Path) -> DemoState:
    """Build the digits demo packages and push them through the gateway, push a second
    ``digits-sklearn`` version, start a canary of it, and send demo traffic with feedback."""
    from examples.digits import build_demo_packages, build_sklearn_candidate

    config = ClientConfig(base_url, admin_key)
    names: list[str] = []
    folder = data_dir / "demo"
    with GatewayClient(config, timeout=httpx.Timeout(300)) as client:
        packages = build_demo_packages(folder)
        for package in packages:
            names.append(str(client.push(package)["name"]))
        first = next(p for p in packages if p.stem == CANARY_MODEL)
        candidate = client.push(build_sklearn_candidate(folder, parent=first))
        # The stable version is what serves now: version 1 on a first run, whatever the last run
        # left on a later one (its pushes are staged).
        stable = client.get_json(f"/v1/admin/deployments/{CANARY_MODEL}")["stable"]
        versions = [str(stable), str(candidate["version"])]
        rollout = {
            "policy": {
                "kind": "canary",
                "versions": versions,
                "weights": dict(zip(versions, CANARY_WEIGHTS, strict=True)),
            },
            "reason": "demo: a canary of a more regularised version",
        }
        status = client.request("PUT", f"/v1/admin/deployments/{CANARY_MODEL}", json=rollout).json()
        sent = sum(_demo_traffic(client, name) for name in names)
    return DemoState(names, str(status["serving"]["summary"]), sent)


def _demo_traffic(client: GatewayClient, model: str) -> int:
    """Predict test digits and reward each answer: 1 when its label is right, else 0."""
    from examples.digits import load_data

    data = load_data()
    for row, label in zip(data.x_test[:DEMO_REQUESTS], data.y_test[:DEMO_REQUESTS], strict=True):
        answer = client.request(
            "POST",
            f"/v1/models/{model}:predict",
            params={"labels": "true"},
            json={"instances": [[float(v) for v in row]]},
        )
        reward = 1.0 if answer.json()["labels"] == [str(label)] else 0.0
        feedback = {"request_id": answer.headers["x-request-id"], "reward": reward}
        client.post_json(f"/v1/models/{model}/feedback", feedback)
    return DEMO_REQUESTS


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
        demo = push_demo_packages(base_url, admin_key, data_dir)
        print(
            f"rollout of {CANARY_MODEL}: {demo.canary}; sent {demo.requests} demo predictions with "
            "feedback (the console's charts have data)",
            flush=True,
        )
        names = demo.names
        print(
            f"pushed {', '.join(names)}; try:\n\n  {curl_example(base_url, data_dir, names[0])}\n", flush=True
        )

    return push_the_demo_models
