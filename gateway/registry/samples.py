"""The first rows of a version's package samples, read once per (model, version, digest).

The console's Try-it form starts from them (``GET /v1/models/{model}/samples``). The rows come
from the package's ``samples.npz``, checked against the sha256 its manifest records, and at most
``MAX_ROWS`` of them (fewer for large rows, ``MAX_VALUES``) are kept per version, in a bounded cache.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import numpy as np

from core.errors import Internal
from modelpkg.manifest import SAMPLES_ENTRY
from modelpkg.samples import parse_samples

MAX_ROWS: Final = 16
MAX_VALUES: Final = 1_000_000
"""At most this many input values in one answer (image models' rows are large): fewer rows then."""
CACHED_VERSIONS: Final = 32
"""Versions whose first rows are kept; each holds what one answer may (``MAX_ROWS``, ``MAX_VALUES``)."""

Inputs = dict[str, np.ndarray]


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


def read_sample_inputs(package: Path, sha256: str) -> Inputs:
    with zipfile.ZipFile(package) as archive:
        raw = archive.read(SAMPLES_ENTRY)
    if hashlib.sha256(raw).hexdigest() != sha256:  # the registry checked it at push: a damaged copy
        raise Internal(f"{SAMPLES_ENTRY} of the stored package does not match its manifest")
    inputs = parse_samples(raw).inputs
    kept = rows_that_fit(inputs, MAX_ROWS)  # what an answer may hold, and so what the cache holds
    return {name: array[:kept].copy() for name, array in inputs.items()}


def rows_that_fit(kept: Inputs, rows: int) -> int:
    """``rows``, or fewer where the package has fewer or they would hold over ``MAX_VALUES``."""
    per_row = sum(max(1, math.prod(array.shape[1:])) for array in kept.values())
    available = min(len(array) for array in kept.values())
    return max(1, min(rows, available, MAX_VALUES // per_row))
