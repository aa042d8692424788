"""``samples.npz``: a few input rows and the original model's outputs for them.

Written as a deterministic zip of ``.npy`` entries (``inputs/<name>.npy``,
``outputs/<name>.npy``); ``numpy.savez`` would stamp the current time into it. Read without
``numpy.load``: the ``.npy`` headers are parsed here so that a hostile file can neither ask
for pickle (object arrays) nor make us allocate more than the bytes it actually carries.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np

from core.errors import PackageError
from modelpkg.archive import Limits, MiB, read_all, write_archive

INPUTS: Final = "inputs/"
OUTPUTS: Final = "outputs/"
_SUFFIX: Final = ".npy"
SAMPLE_LIMITS: Final = Limits(max_entries=1024, max_entry_bytes=256 * MiB, max_total_bytes=512 * MiB)


@dataclass(frozen=True)
class Samples:
    """Sample inputs and the original model's outputs for them, keyed by signature names."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def dump_samples(samples: Samples) -> bytes:
    """Deterministic ``.npz`` bytes of the samples."""
    entries = {f"{INPUTS}{name}{_SUFFIX}": _npy(array) for name, array in samples.inputs.items()}
    entries |= {f"{OUTPUTS}{name}{_SUFFIX}": _npy(array) for name, array in samples.outputs.items()}
    buffer = io.BytesIO()
    write_archive(buffer, entries)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    if array.dtype.hasobject:
        raise PackageError("samples must not be object arrays (they would need pickle)")
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def parse_samples(raw: bytes, limits: Limits = SAMPLE_LIMITS) -> Samples:
    """Read ``samples.npz`` bytes safely; every entry must be an input or output array."""
    entries = read_all(raw, limits, keep=lambda _: True, what="samples.npz")
    inputs: dict[str, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, entry in entries.items():
        target, key = _slot(name, inputs, outputs)
        target[key] = parse_npy(entry.data or b"", name)
    if not inputs or not outputs:
        raise PackageError("samples.npz must hold at least one input and one output array")
    _check_rows(inputs | outputs)
    return Samples(inputs, outputs)


def _slot(
    name: str, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], str]:
    for prefix, target in ((INPUTS, inputs), (OUTPUTS, outputs)):
        key = name.removeprefix(prefix).removesuffix(_SUFFIX)
        if name.startswith(prefix) and name.endswith(_SUFFIX) and key and "/" not in key:
            return target, key
    raise PackageError(f"samples.npz has an unexpected entry {name!r}")


def parse_npy(raw: bytes, name: str) -> np.ndarray:
    """Parse ``.npy`` bytes; refuse object dtypes and shapes the data does not fill exactly."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        shape, fortran, dtype = _read_header(stream, version)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise PackageError(f"samples entry {name!r} is not a valid .npy array: {exc}") from None
    if dtype.hasobject:
        raise PackageError(f"samples entry {name!r} holds Python objects (needs pickle); refused")
    count = math.prod(shape)
    data = raw[stream.tell() :]
    if count * dtype.itemsize != len(data):
        raise PackageError(
            f"samples entry {name!r} declares shape {shape} of {dtype} but carries {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C").copy()


def _read_header(stream: io.BytesIO, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy format version {version}")


def _check_rows(arrays: Mapping[str, np.ndarray]) -> None:
    rows = {name: array.shape[0] if array.ndim else None for name, array in arrays.items()}
    if None in rows.values() or len(set(rows.values())) != 1:
        raise PackageError(f"samples arrays must share their first (row) dimension; got {rows}")
    if next(iter(rows.values())) == 0:
        raise PackageError("samples hold no rows")
