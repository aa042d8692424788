"""KServe v2 datatype names and their numpy equivalents.

The v2 protocol names tensor element types with strings (``FP32``, ``INT64``, ``BYTES``...);
Triton's model configuration uses the ``TYPE_*`` enum of ``model_config.proto``. This module
is the single table that relates the two to numpy and to ONNX tensor types.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from core.errors import InvalidInput

# v2 name -> numpy dtype. BYTES is numpy object (elements are ``bytes``).
_NUMPY: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

V2_DATATYPES: Final[tuple[str, ...]] = tuple(_NUMPY)

# ONNX TensorProto.DataType numbers (onnx.TensorProto), kept as literals so that the serving
# hot path needs no onnx import.
_ONNX: Final[dict[int, str]] = {
    9: "BOOL",
    3: "INT8",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    2: "UINT8",
    4: "UINT16",
    12: "UINT32",
    13: "UINT64",
    10: "FP16",
    1: "FP32",
    11: "FP64",
    8: "BYTES",
}

# onnxruntime reports input types as strings such as "tensor(float)".
_ORT: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# Element size in bytes of the fixed-size types (BYTES is variable).
ELEMENT_SIZE: Final[dict[str, int]] = {
    name: dtype.itemsize for name, dtype in _NUMPY.items() if name != "BYTES"
}


def to_numpy(datatype: str) -> np.dtype:
    """The numpy dtype of a v2 datatype name; InvalidInput names the accepted ones."""
    try:
        return _NUMPY[datatype]
    except KeyError:
        raise InvalidInput(
            f"unsupported datatype {datatype!r}; expected one of {', '.join(V2_DATATYPES)}"
        ) from None


# Keyed by (kind, size) so that either byte order finds its name.
_FROM_NUMPY: Final[dict[tuple[str, int], str]] = {
    (dtype.kind, dtype.itemsize): name for name, dtype in _NUMPY.items() if name != "BYTES"
}


def from_numpy(dtype: np.dtype | type) -> str:
    """The v2 datatype name of a numpy dtype (str/bytes/object map to BYTES)."""
    dt = np.dtype(dtype)
    if dt.kind in ("O", "S", "U"):
        return "BYTES"
    name = _FROM_NUMPY.get((dt.kind, dt.itemsize))
    if name is None:
        raise InvalidInput(f"numpy dtype {dt} has no v2 datatype")
    return name


def from_onnx(elem_type: int) -> str:
    """The v2 datatype name of an ONNX ``TensorProto`` element type number."""
    try:
        return _ONNX[elem_type]
    except KeyError:
        raise InvalidInput(f"ONNX element type {elem_type} has no v2 datatype") from None


def to_onnx(datatype: str) -> int:
    """The ONNX ``TensorProto`` element type number of a v2 datatype name."""
    for number, name in _ONNX.items():
        if name == datatype:
            return number
    raise InvalidInput(f"unsupported datatype {datatype!r}")


def from_onnxruntime(type_string: str) -> str:
    """The v2 datatype name of an onnxruntime type string such as ``tensor(float)``."""
    try:
        return _ORT[type_string]
    except KeyError:
        raise InvalidInput(f"onnxruntime type {type_string} has no v2 datatype") from None


def to_config_enum_name(datatype: str) -> str:
    """Triton's ``model_config.DataType`` enum name: FP32 -> TYPE_FP32, BYTES -> TYPE_STRING."""
    to_numpy(datatype)
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def from_config_enum_name(enum_name: str) -> str:
    """The v2 datatype name of a ``model_config.DataType`` enum name."""
    if enum_name == "TYPE_STRING":
        return "BYTES"
    name = enum_name.removeprefix("TYPE_")
    if name not in _NUMPY:
        raise InvalidInput(f"model config datatype {enum_name} is not supported")
    return name
