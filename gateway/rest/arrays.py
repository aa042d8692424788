"""JSON values → numpy arrays of a declared datatype, strictly.

JSON has numbers, booleans and strings; a silent cast (1.5 into INT64, 300 into UINT8,
"3" into FP32) would answer a question the client did not ask, so each is refused with a
message naming the tensor.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from core import datatypes
from core.errors import InvalidInput

_MAX_RANK = 16
# Which inferred numpy kinds may become each datatype kind without losing meaning.
_ACCEPTS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


def _infer(name: str, data: Any) -> np.ndarray:
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidInput(f"{name}: data is ragged: every row must have the same length") from None
    if array.ndim > _MAX_RANK:
        raise InvalidInput(f"{name}: data is nested {array.ndim} deep; at most {_MAX_RANK} is accepted")
    return array


def _bytes_element(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise InvalidInput(f"{name}: invalid base64 in a b64 value") from None
    raise InvalidInput(f'\'{name}\': BYTES elements must be strings or {{"b64": "..."}} objects')


def _bytes_array(name: str, data: Any) -> np.ndarray:
    def convert(value: Any, depth: int) -> Any:
        if not isinstance(value, list):
            return _bytes_element(name, value)
        # Bounded before recursing: JSON nested ~1000 deep would otherwise hit RecursionError.
        if depth >= _MAX_RANK:
            raise InvalidInput(f"{name}: data is nested more than {_MAX_RANK} deep")
        return [convert(v, depth + 1) for v in value]

    converted = convert(data, 0)
    try:
        array = np.array(converted, dtype=np.object_)
    except ValueError:
        raise InvalidInput(f"{name}: data is ragged: every row must have the same length") from None
    if any(isinstance(element, list) for element in array.reshape(-1)):
        raise InvalidInput(f"{name}: data is ragged: every row must have the same length")
    return array


def to_array(name: str, datatype: str, data: Any) -> np.ndarray:
    """``data`` (a JSON scalar or nested list) as an array of ``datatype``."""
    dtype = datatypes.to_numpy(datatype)
    if datatype == "BYTES":
        return _bytes_array(name, data)
    array = _infer(name, data)
    integers = _python_integers(data) if dtype.kind in "iu" and array.dtype.kind in "fO" else None
    if integers is not None:
        array = integers  # exact; range-checked below like any integer data
    elif array.dtype.kind not in _ACCEPTS.get(dtype.kind, ""):
        if array.size == 0:
            return array.astype(dtype)
        expected = {"b": "booleans", "i": "integers", "u": "non-negative integers", "f": "numbers"}[
            dtype.kind
        ]
        raise InvalidInput(f"{name}: {datatype} data must be {expected}")
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidInput(f"{name}: a value is out of range for {datatype} ({info.min}..{info.max})")
    return array.astype(dtype)


def _python_integers(data: Any) -> np.ndarray | None:
    """Integer data that numpy's inference turns into float64 or objects (a value past int64,
    e.g. UINT64's upper half next to small ones), as an object array of the exact ints; None
    if it is not all integers."""
    try:
        objects = np.array(data, dtype=np.object_)
    except ValueError:
        return None
    values = objects.reshape(-1).tolist()
    if not values or not all(type(value) is int for value in values):
        return None
    return objects


def to_json_data(array: np.ndarray) -> Any:
    """An array as JSON-ready data (orjson serialises numeric arrays natively)."""
    dtype = array.dtype
    if dtype.kind == "O":
        return _texts(array.tolist())
    if dtype.kind == "f" and dtype.itemsize == 2:  # orjson has no float16
        return array.astype(np.float32)
    return np.ascontiguousarray(array)


def _texts(value: Any) -> Any:
    return [_texts(v) for v in value] if isinstance(value, list) else _text(value)


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value
