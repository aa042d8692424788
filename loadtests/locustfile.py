"""Locust users of the gateway's JSON prediction API.

Each user sends what a web app sends, with real handwritten digits (scikit-learn's bundled
``load_digits``, loaded once):

* v1 row format ``{"instances": [[64 pixels], ...]}`` → ``{"predictions": [...]}``;
* v1 columnar format ``{"inputs": [[64 pixels], ...]}`` → ``{"outputs": ...}``;
* v2 ``{"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [n, 64], "data": [...]}]}``.

Every answer is checked (status 200, one prediction per row, the model's version header)
and anything else is marked as a failure with the reason. Requests are grouped by format,
not by model, in locust's statistics.

Environment: ``MDEPLOY_API_KEY`` (required: a key with the predict scope), ``MDEPLOY_MODELS``
(comma-separated, default ``digits-sklearn``). The host is locust's ``--host``.

    MDEPLOY_API_KEY=mdk_... locust -f loadtests/locustfile.py --headless -u 16 -r 16 -t 30s \\
        --host http://127.0.0.1:8000

``python -m loadtests.run_locust`` starts everything and runs this file (see its docstring).
This file imports nothing from the repository: locust loads it by path.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from locust import FastHttpUser, constant, task
from locust.exception import StopUser
from sklearn.datasets import load_digits

API_KEY = os.environ.get("MDEPLOY_API_KEY", "")
MODELS = [name.strip() for name in os.environ.get("MDEPLOY_MODELS", "digits-sklearn").split(",") if name]
# Most web-app calls carry one row; some carry a few (a page of images).
ROW_COUNTS = (1, 1, 1, 1, 1, 1, 2, 4, 8)
BODIES_PER_KIND = 256  # bodies are built once: the client's CPU goes to sending, not to JSON


Rows = list[list[float]]
Check = Callable[[Any, int], str | None]
"""Why a parsed answer to a request of N rows is wrong, or None."""


@dataclass(frozen=True)
class Body:
    rows: int
    data: str


def _digit_rows() -> Rows:
    pixels: Any = load_digits().data  # 1797 x 64, values 0..16
    return [[float(value) for value in row] for row in pixels]


def _v1_instances(rows: Rows) -> str:
    return json.dumps({"instances": rows})


def _v1_inputs(rows: Rows) -> str:
    return json.dumps({"inputs": rows})


def _v2(rows: Rows) -> str:
    flat = [value for row in rows for value in row]
    tensor = {"name": "pixels", "datatype": "FP32", "shape": [len(rows), 64], "data": flat}
    return json.dumps({"inputs": [tensor]})


def _bodies(encode: Callable[[Rows], str], digits: Rows, rng: random.Random) -> list[Body]:
    counts = [rng.choice(ROW_COUNTS) for _ in range(BODIES_PER_KIND)]
    return [Body(n, encode(rng.sample(digits, n))) for n in counts]


_DIGITS = _digit_rows()
_RNG = random.Random(0)
INSTANCES = _bodies(_v1_instances, _DIGITS, _RNG)
INPUTS = _bodies(_v1_inputs, _DIGITS, _RNG)
V2 = _bodies(_v2, _DIGITS, _RNG)


def v1_rows_answered(document: Any, rows: int) -> str | None:
    """Why a v1 row-format answer is wrong, or None."""
    predictions = document.get("predictions") if isinstance(document, dict) else None
    if not isinstance(predictions, list) or len(predictions) != rows:
        return f"expected {rows} predictions, got {str(document)[:200]}"
    return None


def v1_columns_answered(document: Any, rows: int) -> str | None:
    outputs = document.get("outputs") if isinstance(document, dict) else None
    probabilities = outputs.get("probabilities") if isinstance(outputs, dict) else outputs
    if not isinstance(probabilities, list) or len(probabilities) != rows:
        return f"expected probabilities for {rows} rows, got {str(document)[:200]}"
    return None


def v2_answered(document: Any, rows: int) -> str | None:
    outputs = document.get("outputs") if isinstance(document, dict) else None
    shapes = {o.get("name"): o.get("shape") for o in outputs or [] if isinstance(o, dict)}
    if shapes.get("probabilities") != [rows, 10]:
        return f"expected probabilities of shape [{rows}, 10], got {str(document)[:200]}"
    return None


class PredictingUser(FastHttpUser):
    """A web app's backend: calls predictions one after another (closed loop, no think time)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        if not API_KEY:
            raise StopUser("set MDEPLOY_API_KEY to a key with the predict scope")
        self.headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    @task(4)
    def v1_instances(self) -> None:
        self._call("/v1/models/{}:predict", "v1 instances", random.choice(INSTANCES), v1_rows_answered)

    @task(1)
    def v1_inputs(self) -> None:
        self._call("/v1/models/{}:predict", "v1 inputs", random.choice(INPUTS), v1_columns_answered)

    @task(2)
    def v2_infer(self) -> None:
        self._call("/v2/models/{}/infer", "v2 infer", random.choice(V2), v2_answered)

    def _call(self, path: str, kind: str, body: Body, check: Check) -> None:
        url = path.format(random.choice(MODELS))
        name = f"{path.format('[model]')} ({kind}, 1-8 rows)"
        with self.client.post(url, data=body.data, headers=self.headers, name=name, catch_response=True) as r:
            problem = self._problem(r, body, check)
            if problem:
                r.failure(problem)
            else:
                r.success()

    @staticmethod
    def _problem(response: Any, body: Body, check: Check) -> str | None:
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {(response.text or '')[:200]}"
        if not response.headers.get("x-model-version"):
            return "no X-Model-Version header"
        try:
            document = json.loads(response.content)
        except ValueError:
            return f"not JSON: {(response.text or '')[:200]}"
        return check(document, body.rows)
