"""Locust users of the soak test: mixed v1/v2 predictions on a routed model, with feedback.

Each prediction names no version, so the model's deployment routes it; about half of the
answers get feedback (reward 1 when the predicted digit is right), so the bandit learns. Any
answer but 200, a missing version or request id, or a prediction of the wrong size is a
failure. Settings from the environment: MDEPLOY_API_KEY, MDEPLOY_SOAK_MODEL.
"""

from __future__ import annotations

import os
import random
from typing import Any

import orjson
from locust import FastHttpUser, between, task
from sklearn.datasets import load_digits

_DIGITS = load_digits()
ROWS: list[list[float]] = [[float(v) for v in row] for row in _DIGITS.data]
LABELS: list[int] = [int(label) for label in _DIGITS.target]


class SoakUser(FastHttpUser):
    wait_time = between(0.0, 0.02)

    def on_start(self) -> None:
        self.model = os.environ.get("MDEPLOY_SOAK_MODEL", "digits-sklearn")
        self.headers = {"Authorization": f"Bearer {os.environ['MDEPLOY_API_KEY']}"}
        self.rng = random.Random()

    def _sample(self, count: int) -> tuple[list[list[float]], list[int]]:
        picks = [self.rng.randrange(len(ROWS)) for _ in range(count)]
        return [ROWS[i] for i in picks], [LABELS[i] for i in picks]

    @task(4)
    def v1_instances(self) -> None:
        rows, labels = self._sample(self.rng.randint(1, 4))
        body = orjson.dumps({"instances": rows}).decode()
        self._predict(f"/v1/models/{self.model}:predict", "v1 instances", body, labels, _v1_labels)

    @task(1)
    def v1_inputs(self) -> None:
        rows, labels = self._sample(self.rng.randint(1, 4))
        body = orjson.dumps({"inputs": {"pixels": rows}}).decode()
        self._predict(f"/v1/models/{self.model}:predict", "v1 inputs", body, labels, _v1_column_labels)

    @task(3)
    def v2_infer(self) -> None:
        rows, labels = self._sample(self.rng.randint(1, 4))
        flat = [v for row in rows for v in row]
        tensor = {"name": "pixels", "shape": [len(rows), 64], "datatype": "FP32", "data": flat}
        body = orjson.dumps({"inputs": [tensor]}).decode()
        self._predict(f"/v2/models/{self.model}/infer", "v2 infer", body, labels, _v2_labels)

    def _predict(self, path: str, name: str, body: str, labels: list[int], read: Any) -> None:
        with self.client.post(
            path, data=body, headers=self.headers, name=name, catch_response=True
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"{answer.status_code}: {answer.text[:200]}")
                return
            request_id = answer.headers.get("x-request-id")
            if not request_id or not answer.headers.get("x-model-version"):
                answer.failure("no X-Request-Id or X-Model-Version")
                return
            try:
                predicted = read(orjson.loads(answer.content))
            except (KeyError, TypeError, ValueError, StopIteration) as error:
                answer.failure(f"unexpected answer ({error!r}): {answer.text[:200]}")
                return
            if len(predicted) != len(labels):
                answer.failure(f"{len(predicted)} predictions for {len(labels)} rows")
                return
        if self.rng.random() < 0.5:
            reward = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels)
            self._feedback(request_id, reward)

    def _feedback(self, request_id: str, reward: float) -> None:
        body = orjson.dumps({"request_id": request_id, "reward": reward}).decode()
        path = f"/v1/models/{self.model}/feedback"
        with self.client.post(
            path, data=body, headers=self.headers, name="feedback", catch_response=True
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"{answer.status_code}: {answer.text[:200]}")


def _scalar(value: Any) -> int:
    """A label, whether the output is shaped [rows] or [rows, 1]."""
    return int(value[0] if isinstance(value, list) else value)


def _v1_labels(document: dict[str, Any]) -> list[int]:
    return [_scalar(row["label"]) for row in document["predictions"]]


def _v1_column_labels(document: dict[str, Any]) -> list[int]:
    return [_scalar(v) for v in document["outputs"]["label"]]


def _v2_labels(document: dict[str, Any]) -> list[int]:
    label = next(output for output in document["outputs"] if output["name"] == "label")
    return [int(v) for v in label["data"]]
