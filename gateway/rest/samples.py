"""``GET /v1/models/{model}/samples``: a few of the input rows a version's package was built with.

The console's Try-it form starts from them: the answer's ``instances`` (row format) or
``inputs`` (columnar) can be sent as they are to ``/v1/models/{model}:predict``. The rows come
from the package's ``samples.npz`` (checked against the sha256 its manifest records), read once
per (model, version, digest) and kept, at most ``MAX_ROWS`` of them, in a small bounded cache.
A key that may call the model may read them (``predict`` with the model in its list), and so may
an ``admin`` key, as for ``/v1/models/{model}/series``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import InvalidInput
from gateway.auth.authorization import requires
from gateway.auth.scopes import KeyScope
from gateway.registry.samples import MAX_ROWS, Inputs, read_sample_inputs, rows_that_fit
from gateway.rest.api_doc import Operation, Param, documented
from gateway.rest.arrays import to_json_data
from gateway.rest.state import gateway_state
from modelpkg.manifest import SAMPLES_ENTRY

DEFAULT_ROWS: Final = 3


class SampleRows(BaseModel):
    """The first rows of a version's package samples, ready for the predict API."""

    model: str
    version: str
    rows: int
    """How many rows each input has here: fewer than asked when the package has fewer, or when they
    would hold over a million values (at least one)."""
    inputs: dict[str, Any]
    """Input name → its rows: the columnar body ``{"inputs": ...}`` of ``:predict``."""
    instances: list[Any] | None
    """The same rows in row format, ``{"instances": ...}`` of ``:predict`` (a row is an object of
    input name → value when the model has several inputs); null for a model without a batch
    dimension, which takes the columnar form only."""


def _rows(request: Request) -> int:
    text = request.query_params.get("rows", str(DEFAULT_ROWS))
    if not (text.isdecimal() and text.isascii() and len(text) <= 2) or not 1 <= int(text) <= MAX_ROWS:
        raise InvalidInput(
            f"query parameter 'rows' must be a whole number from 1 to {MAX_ROWS}, not {text!r}"
        )
    return int(text)


@documented(
    Operation(
        "The first rows of a version's package samples (default: the version a request naming none "
        "gets), as a body for :predict",
        answer=SampleRows,
        errors=(400, 404),
        params=(
            Param("version", {"type": "string", "maxLength": 32}, description="a loaded version"),
            Param("rows", {"type": "integer", "minimum": 1, "maximum": MAX_ROWS, "default": DEFAULT_ROWS}),
        ),
    )
)
@requires(KeyScope.PREDICT, KeyScope.ADMIN, model_param="model")
async def samples(request: Request) -> Response:
    state = gateway_state(request)
    model = request.path_params["model"]
    rows = _rows(request)
    asked = request.query_params.get("version") or await state.router.live_version(model)
    # NotFound names an unknown model, or the loaded versions when this one is not among them.
    served = state.catalog.resolve(model, asked)
    number = int(served.version)
    record = await state.registry.version_record(model, number)

    async def read() -> Inputs:  # only when not cached: the package may have to be fetched
        package = await state.registry.package_path(model, number)
        # Off the event loop: a zip entry to inflate and parse.
        return await asyncio.to_thread(read_sample_inputs, package, record.manifest.files[SAMPLES_ENTRY])

    kept = await state.samples.inputs((model, served.version, record.digest), read)
    count = rows_that_fit(kept, rows)
    columns = {name: to_json_data(array[:count]) for name, array in kept.items()}
    answer = {
        "model": model,
        "version": served.version,
        "rows": count,
        "inputs": columns,
        "instances": _instances(columns, count) if served.max_batch_size > 0 else None,
    }
    # orjson writes each float32 as its shortest form (0.1, not 0.10000000149011612): an editor's text.
    return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def _instances(columns: dict[str, Any], count: int) -> Any:
    if len(columns) == 1:
        return next(iter(columns.values()))
    return [{name: column[i] for name, column in columns.items()} for i in range(count)]


def routes() -> list[Route]:
    return [Route("/v1/models/{model}/samples", samples, methods=["GET"])]
