"""Locust users of the gateway's JSON prediction API, for any pushed model.

Each model's inputs come from the gateway (``GET /v2/models/{m}``: names, datatypes, shapes)
and its request rows from the package's own samples: a local ``--package model.pkg``, or the
live version's package pulled with an admin key. Each user sends what a web app sends:

* v1 rows ``{"instances": [...]}`` → ``{"predictions": [...]}``, one prediction per row;
* v1 columns ``{"inputs": {name: [...]}}`` → ``{"outputs": ...}``;
* v2 ``{"inputs": [{"name", "datatype", "shape", "data"}]}`` → outputs of ``rows`` rows.

Every answer is checked (status 200, the model's version header, one result per row) and
anything else is a failure with the reason. Requests are grouped by format in the statistics.

    mdeploy-loadtest --host http://127.0.0.1:8000 --model digits -u 16 -t 30s     # any locust flag
    locust -f loadtests/locust/locustfile.py --headless --host URL --model digits [--package digits.pkg]

Keys: ``MDEPLOY_API_KEY`` (predict scope: the load) and, without ``--package``, an admin key to
pull the package (``MDEPLOY_ADMIN_KEY``, else ``MDEPLOY_API_KEY`` when it has that scope).
``--model`` is repeatable (or ``MDEPLOY_MODELS``, comma-separated); each request picks one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser

from mdeploy.client import ClientConfig, ClientError, GatewayClient
from modelpkg import read_package

logging.getLogger("httpx").setLevel(logging.WARNING)  # the few set-up requests, not one line each

# Most web-app calls carry one row; some carry a few (a page of images).
ROW_COUNTS = (1, 1, 1, 1, 1, 1, 2, 4, 8)
BODIES_PER_KIND = 256  # built once: the client's CPU goes to sending, not to JSON


def _options(parser: Any) -> None:
    parser.add_argument("--model", action="append", default=[], help="model to load-test (repeatable)")
    parser.add_argument("--package", default="", help="a local model.pkg whose samples make the rows")


events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Body:
    rows: int
    data: str


@dataclass(frozen=True)
class Workload:
    """Prepared request bodies of one model, by format."""

    model: str
    instances: list[Body]
    columns: list[Body]
    v2: list[Body]


def _batches(samples: dict[str, np.ndarray], rng: random.Random) -> list[tuple[int, dict[str, np.ndarray]]]:
    available = next(iter(samples.values())).shape[0]
    batches = []
    for _ in range(BODIES_PER_KIND):
        picked = [rng.randrange(available) for _ in range(rng.choice(ROW_COUNTS))]
        batches.append((len(picked), {name: array[picked] for name, array in samples.items()}))
    return batches


def _instances(inputs: dict[str, np.ndarray]) -> str:
    if len(inputs) == 1:
        return json.dumps({"instances": next(iter(inputs.values())).tolist()})
    rows = next(iter(inputs.values())).shape[0]
    return json.dumps({"instances": [{k: v[i].tolist() for k, v in inputs.items()} for i in range(rows)]})


def _columns(inputs: dict[str, np.ndarray]) -> str:
    return json.dumps({"inputs": {name: array.tolist() for name, array in inputs.items()}})


def _v2(inputs: dict[str, np.ndarray], datatypes: dict[str, str]) -> str:
    tensors = [
        {"name": n, "datatype": datatypes[n], "shape": list(a.shape), "data": a.reshape(-1).tolist()}
        for n, a in inputs.items()
    ]
    return json.dumps({"inputs": tensors})


def workload(host: str, model: str, package: str, rng: random.Random) -> Workload:
    """The model's signature from the gateway, its rows from the package's samples."""
    try:
        with _client(host, os.environ.get("MDEPLOY_API_KEY")) as gateway:
            metadata = gateway.get_json(f"/v2/models/{quote(model, safe='')}")
    except ClientError as error:
        raise StopUser(f"model {model!r}: {error.message}") from None
    datatypes = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    samples = read_package(Path(package) if package else _pull(host, model)).samples.inputs
    missing = set(datatypes) - set(samples)
    if missing:
        raise StopUser(f"the package's samples lack inputs {sorted(missing)} of model {model!r}")
    batches = _batches({name: samples[name] for name in datatypes}, rng)
    return Workload(
        model,
        [Body(rows, _instances(inputs)) for rows, inputs in batches],
        [Body(rows, _columns(inputs)) for rows, inputs in batches],
        [Body(rows, _v2(inputs, datatypes)) for rows, inputs in batches],
    )


def _pull(host: str, model: str) -> bytes:
    """The live version's package, downloaded with an admin key."""
    key = os.environ.get("MDEPLOY_ADMIN_KEY") or os.environ.get("MDEPLOY_API_KEY")
    path = f"/v1/admin/models/{quote(model, safe='')}"
    try:
        with _client(host, key) as gateway:
            serving = gateway.get_json(path)["serving"]
            live = serving["live_version"] or serving["stable"]
            return gateway.request("GET", f"{path}/versions/{live}/package").content
    except ClientError as error:
        raise StopUser(
            f"cannot pull model {model!r}'s package ({error.message}): give --package model.pkg "
            "or an admin key in MDEPLOY_ADMIN_KEY"
        ) from None


def _client(host: str, key: str | None) -> GatewayClient:
    return GatewayClient(ClientConfig(host, key), timeout=httpx.Timeout(300))


_prepared: dict[str, Workload] = {}
_preparing = threading.Lock()


def prepared(host: str, model: str, package: str) -> Workload:
    with _preparing:
        if model not in _prepared:
            _prepared[model] = workload(host, model, package, random.Random(0))
        return _prepared[model]


def v1_rows_answered(document: Any, rows: int) -> str | None:
    """Why a v1 row-format answer is wrong, or None."""
    predictions = document.get("predictions") if isinstance(document, dict) else None
    if not isinstance(predictions, list) or len(predictions) != rows:
        return f"expected {rows} predictions, got {str(document)[:200]}"
    return None


def v1_columns_answered(document: Any, rows: int) -> str | None:
    outputs = document.get("outputs") if isinstance(document, dict) else None
    columns = list(outputs.values()) if isinstance(outputs, dict) else [outputs]
    if not all(isinstance(column, list) and len(column) == rows for column in columns):
        return f"expected outputs of {rows} rows, got {str(document)[:200]}"
    return None


def v2_answered(document: Any, rows: int) -> str | None:
    outputs = document.get("outputs") if isinstance(document, dict) else None
    shapes = [o.get("shape") for o in outputs or [] if isinstance(o, dict)]
    if not shapes or any(not shape or shape[0] != rows for shape in shapes):
        return f"expected outputs of {rows} rows, got {str(document)[:200]}"
    return None


Check = Callable[[Any, int], str | None]


class PredictingUser(FastHttpUser):
    """A web app's backend: calls predictions one after another (closed loop, no think time)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        key = os.environ.get("MDEPLOY_API_KEY", "")
        if not key:
            raise StopUser("set MDEPLOY_API_KEY to a key with the predict scope")
        options = self.environment.parsed_options
        env_models = [m.strip() for m in os.environ.get("MDEPLOY_MODELS", "").split(",") if m.strip()]
        models = (getattr(options, "model", None) or []) + env_models
        if not models:
            raise StopUser("name the model to load-test: --model NAME (or MDEPLOY_MODELS)")
        package = getattr(options, "package", "") or ""
        self.workloads = [prepared(self.host or "", model, package) for model in models]
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    @task(4)
    def v1_instances(self) -> None:
        load = random.choice(self.workloads)
        self._call(
            f"/v1/models/{load.model}:predict",
            "v1 instances",
            random.choice(load.instances),
            v1_rows_answered,
        )

    @task(1)
    def v1_inputs(self) -> None:
        load = random.choice(self.workloads)
        self._call(
            f"/v1/models/{load.model}:predict", "v1 inputs", random.choice(load.columns), v1_columns_answered
        )

    @task(2)
    def v2_infer(self) -> None:
        load = random.choice(self.workloads)
        self._call(f"/v2/models/{load.model}/infer", "v2 infer", random.choice(load.v2), v2_answered)

    def _call(self, url: str, kind: str, body: Body, check: Check) -> None:
        name = f"{kind} (1-8 rows)"
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
