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
import hashlib
import math
import zipfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import Internal, InvalidInput
from gateway.auth.authorization import requires
from gateway.auth.scopes import KeyScope
from gateway.rest.api_doc import Operation, Param, documented
from gateway.rest.arrays import to_json_data
from gateway.rest.state import gateway_state
from modelpkg.manifest import SAMPLES_ENTRY
from modelpkg.samples import parse_samples

MAX_ROWS: Final = 16
DEFAULT_ROWS: Final = 3
MAX_VALUES: Final = 1_000_000
"""At most this many input values in one answer (image models' rows are large): fewer rows then."""
CACHED_VERSIONS: Final = 32
"""Versions whose first rows are kept; each holds what one answer may (``MAX_ROWS``, ``MAX_VALUES``)."""

Inputs = dict[str, np.ndarray]


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


class SampleCache:
    """Each version's first ``MAX_ROWS`` sample inputs, by (model, version, digest), least recently
    used dropped first. The digest names the bytes, so a re-pushed version is read again."""

    def __init__(self, capacity: int = CACHED_VERSIONS) -> None:
        self._capacity = capacity
        self._kept: OrderedDict[tuple[str, str, str], Inputs] = OrderedDict()
        self.reads = 0
        """Packages read so far (a test's way to see the cache working)."""

    async def inputs(self, key: tuple[str, str, str], read: Callable[[], Awaitable[Inputs]]) -> Inputs:
        found = self._kept.get(key)
        if found is None:
            found = await read()
            self.reads += 1
            self._kept[key] = found
            while len(self._kept) > self._capacity:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        return found


def _read_inputs(package: Path, sha256: str) -> Inputs:
    with zipfile.ZipFile(package) as archive:
        raw = archive.read(SAMPLES_ENTRY)
    if hashlib.sha256(raw).hexdigest() != sha256:  # the registry checked it at push: a damaged copy
        raise Internal(f"{SAMPLES_ENTRY} of the stored package does not match its manifest")
    inputs = parse_samples(raw).inputs
    kept = _fitting(inputs, MAX_ROWS)  # what an answer may hold, and so what the cache holds
    return {name: array[:kept].copy() for name, array in inputs.items()}


def _rows(request: Request) -> int:
    text = request.query_params.get("rows", str(DEFAULT_ROWS))
    if not (text.isdecimal() and text.isascii() and len(text) <= 2) or not 1 <= int(text) <= MAX_ROWS:
        raise InvalidInput(
            f"query parameter 'rows' must be a whole number from 1 to {MAX_ROWS}, not {text!r}"
        )
    return int(text)


def _cache(request: Request) -> SampleCache:
    state = request.app.state
    cache: SampleCache | None = getattr(state, "sample_cache", None)
    if cache is None:
        cache = state.sample_cache = SampleCache()
    return cache


def _fitting(kept: Inputs, rows: int) -> int:
    """``rows``, or fewer where the package has fewer or they would hold over ``MAX_VALUES``."""
    per_row = sum(max(1, math.prod(array.shape[1:])) for array in kept.values())
    available = min(len(array) for array in kept.values())
    return max(1, min(rows, available, MAX_VALUES // per_row))


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
        return await asyncio.to_thread(_read_inputs, package, record.manifest.files[SAMPLES_ENTRY])

    kept = await _cache(request).inputs((model, served.version, record.digest), read)
    count = _fitting(kept, rows)
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
