"""Turning what the caller gives (sample files, arrays, label files) into checked values."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from converters.rename import graph_inputs
from core.datatypes import from_onnx, to_numpy
from core.errors import ConversionError, InvalidInput
from modelpkg.parquet_rows import read_parquet_rows

SamplesLike = np.ndarray | Mapping[str, np.ndarray] | str | Path
"""One array (single-input models), arrays by input name, or a ``.npy``/``.npz`` file."""

UNNAMED = ""
_POSITIONAL = re.compile(r"^arr_(\d+)$")


def load_samples(samples: SamplesLike, rows: int) -> dict[str, np.ndarray]:
    """Sample arrays by name (UNNAMED for a lone array), cut to the first ``rows`` rows."""
    if isinstance(samples, str | Path):
        arrays = _load_sample_file(Path(samples), rows)
    elif isinstance(samples, np.ndarray):
        arrays = {UNNAMED: samples}
    elif isinstance(samples, Mapping):
        arrays = {str(name): np.asarray(value) for name, value in samples.items()}
    else:
        raise InvalidInput(
            "samples must be an array, a mapping of arrays or a .npy/.npz/.parquet path, "
            f"not {type(samples).__name__}"
        )
    return _checked(arrays, rows)


def _load_sample_file(path: Path, rows: int) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InvalidInput(f"samples file {path} does not exist")
    if path.suffix.lower() == ".parquet":
        table = read_parquet_rows(path, max(rows, 1))
        return {UNNAMED: table} if isinstance(table, np.ndarray) else table
    if path.suffix.lower() not in (".npy", ".npz"):
        raise InvalidInput(f"samples file {path} must be .npy, .npz or .parquet")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidInput(f"cannot read samples from {path}: {exc}") from None
    if isinstance(loaded, np.ndarray):
        return {UNNAMED: loaded}
    with loaded:
        return {name: loaded[name] for name in loaded.files}


def _checked(arrays: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    if not arrays:
        raise InvalidInput("samples are empty")
    if rows < 1:
        raise InvalidInput(f"sample rows must be at least 1, got {rows}")
    counts = {name: array.shape[0] if array.ndim else 0 for name, array in arrays.items()}
    if min(counts.values()) == 0 or len(set(counts.values())) > 1:
        raise InvalidInput(f"sample arrays need the same, non-zero number of rows; got {counts}")
    if any(array.dtype.hasobject for array in arrays.values()):
        raise InvalidInput("samples must be numeric or string arrays, not Python objects")
    return {name: np.ascontiguousarray(array[:rows]) for name, array in arrays.items()}


def bind_samples(
    arrays: Mapping[str, np.ndarray], model: onnx.ModelProto, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Sample arrays keyed by the model's ONNX input names, cast to the input types.

    Arrays may be named by signature names (``names``), by ONNX names, or be positional
    (a lone array, or ``arr_0``... as ``numpy.savez`` names them).
    """
    values = graph_inputs(model.graph)
    onnx_names = [value.name for value in values]
    ordered = _order(arrays, onnx_names, list(names))
    return {value.name: _cast(value, array) for value, array in zip(values, ordered, strict=True)}


def _order(arrays: Mapping[str, np.ndarray], onnx_names: list[str], names: list[str]) -> list[np.ndarray]:
    keys = set(arrays)
    if keys == set(names):
        return [arrays[name] for name in names]
    if keys == set(onnx_names):
        return [arrays[name] for name in onnx_names]
    positional = sorted(keys, key=lambda key: int(m[1]) if (m := _POSITIONAL.match(key)) else -1)
    if len(keys) == len(names) and (keys == {UNNAMED} or all(_POSITIONAL.match(key) for key in keys)):
        return [arrays[key] for key in positional]
    raise InvalidInput(f"samples are named {sorted(keys)}; the model's inputs are {names}")


def _cast(value: onnx.ValueInfoProto, array: np.ndarray) -> np.ndarray:
    try:
        dtype = to_numpy(from_onnx(value.type.tensor_type.elem_type))
    except InvalidInput as exc:
        raise ConversionError(f"model input {value.name!r}: {exc.message}") from None
    if dtype.kind == "O":
        return array.astype(str)
    try:
        return array.astype(dtype, casting="same_kind")
    except TypeError:
        raise InvalidInput(
            f"samples for input {value.name!r} are {array.dtype}; the model takes {dtype}"
        ) from None


def storable(name: str, array: np.ndarray) -> np.ndarray:
    """An output array as samples.npz can hold it: Python strings become a unicode array."""
    array = np.asarray(array)
    if not array.dtype.hasobject:
        return array
    if all(isinstance(item, str | bytes) for item in array.flat):
        return array.astype(str)
    raise ConversionError(f"the original model's output {name!r} holds Python objects, not numbers or text")


def load_labels(path: Path) -> list[str]:
    """Class names from a JSON list or a text file with one name per line."""
    if not path.is_file():
        raise InvalidInput(f"labels file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read labels from {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        return _json_labels(path, text)
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise InvalidInput(f"labels file {path} is empty")
    return labels


def _json_labels(path: Path, text: str) -> list[str]:
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"labels file {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(
            f"labels file {path} nests too deeply: it must be a flat list of strings"
        ) from None
    if not isinstance(labels, list) or not labels or not all(isinstance(item, str) for item in labels):
        raise InvalidInput(f"labels file {path} must hold a non-empty JSON list of strings")
    return labels
