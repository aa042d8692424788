"""What each step of a gateway request costs, timed in-process without a profiler.

cProfile (``profile_gateway``) says where time goes but roughly doubles it; this times the
gateway's own functions one by one, with the objects a 1-row digits-sklearn ``:predict`` gives
them, so the per-request sum can be set against the gateway's measured CPU per request.
Per-batch steps (building the ModelInfer, decoding its answer) are shown for one batch; a
request pays them divided by the mean batch.

Run: ``python -m loadtests.gateway.gateway_steps`` (~10 s, no servers).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import timeit
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import datatypes, validation
from core.signature import Signature, TensorSpec
from gateway.auth.keys import KeyRecord, KeyStore
from gateway.auth.ratelimit import RateLimiter
from gateway.auth.scopes import KeyScope
from gateway.catalog import ServedVersion
from gateway.database.engine import SQLiteDatabase
from gateway.dataplane import InferenceResult
from gateway.db import open_database
from gateway.metrics import Metrics
from gateway.rest import v1_codec
from gateway.rest.inference import PredictionRoutes
from gateway.rest.request_id import assign_request_id
from loadtests.gateway.bench_gateway import digit_row, v1_body
from protos import codecs
from protos.generated import inference_pb2 as pb

PATH = "/v1/models/digits-sklearn:predict"
# The digits-sklearn signature as the registry serves it (see the pushed package's manifest).
SERVED = ServedVersion(
    "digits-sklearn",
    "1",
    Signature(
        (TensorSpec("pixels", "FP32", (-1, 64)),),
        (TensorSpec("label", "INT64", (-1, 1)), TensorSpec("probabilities", "FP32", (-1, 10))),
    ),
    max_batch_size=64,
    labels=tuple(str(digit) for digit in range(10)),
    label_output="probabilities",
)


@dataclass(frozen=True)
class Step:
    name: str
    where: str
    us: float
    per_batch: bool = False


def per_call_us(call: Callable[[], object], budget_s: float = 0.3) -> float:
    """Best of 5 timings of ``call``, µs per call (the least disturbed by other work)."""
    timer = timeit.Timer(call)
    count, _ = timer.autorange()
    count = max(1, int(count * budget_s / 0.2 / 5))
    return 1e6 * min(timer.repeat(repeat=5, number=count)) / count


@contextmanager
def key_store() -> Iterator[tuple[KeyStore, str]]:
    """A key store on a new SQLite database, with a key it remembers (the hot path)."""
    with tempfile.TemporaryDirectory(prefix="mdeploy-steps-") as folder:
        database = SQLiteDatabase.open(open_database(Path(folder) / "registry.sqlite3"))
        store = KeyStore(database)
        try:
            key = asyncio.run(store.create(["predict", "feedback"], name="steps")).key
            answer = store.verify(key)
            if not isinstance(answer, KeyRecord):  # the first verify looks it up
                asyncio.run(_awaited(answer))
            yield store, key
        finally:
            store.close()
            asyncio.run(database.close())
            database.connection.close()


async def _awaited(answer: Awaitable[KeyRecord]) -> KeyRecord:
    return await answer


def auth_steps() -> list[Step]:
    limiter = RateLimiter("memory://", {scope: "1000000000/minute" for scope in KeyScope}, False)
    with key_store() as (store, key):
        record = store.verify(key)
        assert isinstance(record, KeyRecord), "a remembered key is verified without a coroutine"
        return [
            Step(
                "verify API key (remembered record, SHA-256)",
                "auth/keys.py KeyStore.verify",
                per_call_us(lambda: store.verify(key)),
            ),
            Step(
                "rate limit hit (memory://)",
                "auth/ratelimit.py RateLimiter.hit_in_process",
                per_call_us(lambda: limiter.hit_in_process(record, KeyScope.PREDICT)),
            ),
        ]


def claim_us() -> float:
    """The fast path's test of a request for a prediction route (``GatewayApp.__call__``)."""
    routes = PredictionRoutes()
    return per_call_us(lambda: routes.claim({"type": "http", "path": PATH, "method": "POST"}))


def codec_steps() -> list[Step]:
    body = v1_body(digit_row())
    parsed = v1_codec.parse_request(body, SERVED)
    outputs: dict[str, np.ndarray] = {
        "label": np.array([[4]], dtype=np.int64),
        "probabilities": np.full((1, 10), 0.1, np.float32),
    }
    result = InferenceResult(SERVED.name, SERVED.version, outputs, SERVED)
    return [
        Step(
            "parse v1 JSON → arrays",
            "rest/v1_codec.py parse_request",
            per_call_us(lambda: v1_codec.parse_request(body, SERVED)),
        ),
        Step(
            "check inputs/outputs vs signature",
            "core/validation.py check_inputs/outputs",
            per_call_us(
                lambda: (
                    validation.check_inputs(SERVED.signature, parsed.inputs, 64),
                    validation.check_outputs(SERVED.signature, ()),
                )
            ),
        ),
        Step(
            "render v1 JSON",
            "rest/v1_codec.py render_response",
            per_call_us(lambda: v1_codec.render_response(parsed, result, False)),
        ),
    ]


def metrics_steps() -> list[Step]:
    metrics = Metrics()

    def observe() -> None:  # what the prediction endpoint does per request
        metrics.observe_request("digits-sklearn", "1", "v1", 200, 0.001)

    return [
        Step("request counter + latency", "gateway/metrics.py observe_request", per_call_us(observe)),
        Step("request id", "rest/request_id.py", per_call_us(lambda: assign_request_id({}, b""))),
    ]


def backend_steps(rows: int) -> list[Step]:
    """The ModelInfer of one batch of ``rows``: built, serialized, its reply parsed and split."""
    batch = np.repeat(digit_row(), rows, axis=0)
    reply = _reply(rows)
    wire = reply.SerializeToString()

    def build() -> bytes:
        request = pb.ModelInferRequest(model_name="digits-sklearn", model_version="1")
        codecs.encode_input(request, "pixels", np.concatenate([batch[i : i + 1] for i in range(rows)]))
        for name in ("label", "probabilities"):
            request.outputs.add(name=name)
        return request.SerializeToString()

    def decode() -> list[dict[str, np.ndarray]]:
        outputs = codecs.decode_response_outputs(pb.ModelInferResponse.FromString(wire))
        return [{n: a[i : i + 1] for n, a in outputs.items()} for i in range(rows)]

    return [
        Step(
            f"build + serialize ModelInfer ({rows} rows)",
            "gateway/dataplane.py DataPlane._run",
            per_call_us(build),
            True,
        ),
        Step(
            f"parse + split the reply ({rows} rows)",
            "gateway/dataplane.py DataPlane._run",
            per_call_us(decode),
            True,
        ),
    ]


def _reply(rows: int) -> pb.ModelInferResponse:
    reply = pb.ModelInferResponse(model_name="digits-sklearn", model_version="1")
    for name, array in (
        ("label", np.zeros((rows, 1), np.int64)),
        ("probabilities", np.zeros((rows, 10), np.float32)),
    ):
        tensor = reply.outputs.add(name=name, datatype=datatypes.from_numpy(array.dtype))
        tensor.shape.extend(array.shape)
        reply.raw_output_contents.append(array.tobytes())
    return reply


def render(steps: list[Step], batch: int) -> None:
    print(f"{'µs/call':>8} {'µs/req':>7}  step (where)")
    total = 0.0
    for step in steps:
        per_request = step.us / batch if step.per_batch else step.us
        total += per_request
        print(f"{step.us:8.1f} {per_request:7.1f}  {step.name} ({step.where})")
    print(f"{'':>8} {total:7.1f}  sum per request (batch of {batch})")


def main(argv: list[str] | None = None) -> int:
    batch = int(argv[0]) if argv else 16
    steps = [
        *auth_steps(),
        Step("claim a prediction path", "rest/inference.py PredictionRoutes.claim", claim_us()),
        *codec_steps(),
        *metrics_steps(),
        *backend_steps(batch),
    ]
    render(steps, batch)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
