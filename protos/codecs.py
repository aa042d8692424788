"""numpy ⇄ KServe v2 tensors: raw bytes and typed contents.

Decoding validates what the wire alone can tell (datatype known, shape non-negative, element
count and byte length consistent) and raises ``InvalidInput`` naming the tensor. Whether the
tensor fits a model's signature is the server's business, not this module's.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np

from core import datatypes
from core.errors import InvalidInput, Unsupported
from protos.generated import inference_pb2 as pb

# Which InferTensorContents field carries each datatype. FP16 has none: it travels raw.
CONTENTS_FIELD: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_LENGTH_PREFIX = struct.Struct("<I")

# Shapes numpy (1.x and 2.x) can hold: at most 32 dimensions, and non-zero dimensions whose
# product times the widest element size (8 bytes) fits in int64, even when another one is 0.
MAX_RANK: Final = 32
_MAX_EXTENT: Final = (2**63 - 1) // 8


def element_count(name: str, shape: tuple[int, ...] | list[int]) -> int:
    """Number of elements of ``shape``; negative dimensions and impossible shapes are refused."""
    if len(shape) > MAX_RANK:
        raise InvalidInput(
            f"input '{name}': shape has {len(shape)} dimensions; at most {MAX_RANK} are supported"
        )
    count = 1
    extent = 1
    for dim in shape:
        if dim < 0:
            raise InvalidInput(f"input '{name}': shape {list(shape)} has a negative dimension")
        count *= dim
        extent *= max(dim, 1)
    if count == 0 and extent > _MAX_EXTENT:  # else callers compare ``count`` with their limits
        raise InvalidInput(f"input '{name}': shape {list(shape)} is too large for any tensor")
    return count


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor to raw form: each element as 4-byte little-endian length, then its bytes."""
    parts: list[bytes] = []
    for element in array.reshape(-1):
        data = element.encode() if isinstance(element, str) else bytes(element)
        parts.append(_LENGTH_PREFIX.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(name: str, raw: bytes, count: int) -> np.ndarray:
    """Raw BYTES form to a 1-D object array of ``count`` elements."""
    elements: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f"input '{name}': BYTES element {len(elements)} has a truncated length")
        (length,) = _LENGTH_PREFIX.unpack_from(view, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(
                f"input '{name}': BYTES element {len(elements)} declares {length} bytes "
                f"but only {len(raw) - offset} remain"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidInput(f"input '{name}': expected {count} BYTES elements, got {len(elements)}")
    result = np.empty(count, dtype=np.object_)
    result[:] = elements
    return result


def decode_raw(name: str, datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    """A raw little-endian buffer as an array of ``shape``."""
    dtype = datatypes.to_numpy(datatype)
    count = element_count(name, shape)
    if datatype == "BYTES":
        return deserialize_bytes(name, raw, count).reshape(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input '{name}': raw content has {len(raw)} bytes, expected {expected} "
            f"({count} {datatype} elements of shape {shape})"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def decode_contents(
    name: str, datatype: str, shape: list[int], contents: pb.InferTensorContents
) -> np.ndarray:
    """Typed contents (``fp32_contents``...) as an array of ``shape``."""
    dtype = datatypes.to_numpy(datatype)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input '{name}': {datatype} has no typed contents; send it as raw bytes")
    count = element_count(name, shape)
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': {field} has {len(values)} elements, expected {count} for shape {shape}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=np.object_)
        array[:] = list(values)
        return array.reshape(shape)
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except OverflowError:
        raise InvalidInput(f"input '{name}': a value is out of range for {datatype}") from None


def decode_input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> np.ndarray:
    """One request input as numpy, from raw bytes when given, else its typed contents."""
    shape = list(tensor.shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(
                f"input '{tensor.name}' has both raw_input_contents and typed contents; send one of them"
            )
        return decode_raw(tensor.name, tensor.datatype, shape, raw)
    return decode_contents(tensor.name, tensor.datatype, shape, tensor.contents)


def decode_request_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """Every input of a ModelInferRequest by name; raw contents must cover all inputs or none."""
    raws = request.raw_input_contents
    if raws and len(raws) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raws)} entries for {len(request.inputs)} inputs; "
            "send one raw buffer per input, in input order"
        )
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise InvalidInput(f"input '{tensor.name}' appears more than once")
        arrays[tensor.name] = decode_input(tensor, raws[index] if raws else None)
    return arrays


def to_raw(array: np.ndarray) -> bytes:
    """An array's raw v2 form (row-major, little-endian; BYTES length-prefixed)."""
    if array.dtype.kind in ("O", "S", "U"):
        return serialize_bytes(array)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).tobytes()


def to_contents(array: np.ndarray) -> pb.InferTensorContents:
    """An array as typed contents (not possible for FP16)."""
    datatype = datatypes.from_numpy(array.dtype)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"{datatype} tensors have no typed contents; use raw contents")
    contents = pb.InferTensorContents()
    flat = array.reshape(-1)
    if datatype == "BYTES":
        values: list[bytes] = [e.encode() if isinstance(e, str) else bytes(e) for e in flat]
        contents.bytes_contents.extend(values)
    else:
        getattr(contents, field).extend(flat.tolist())
    return contents


def encode_output(response: pb.ModelInferResponse, name: str, array: np.ndarray, *, raw: bool = True) -> None:
    """Append ``array`` to ``response`` as output ``name``, raw (the default) or typed."""
    tensor = response.outputs.add()
    tensor.name = name
    tensor.datatype = datatypes.from_numpy(array.dtype)
    tensor.shape.extend(array.shape)
    if raw:
        response.raw_output_contents.append(to_raw(array))
    else:
        tensor.contents.CopyFrom(to_contents(array))


def encode_input(request: pb.ModelInferRequest, name: str, array: np.ndarray, *, raw: bool = True) -> None:
    """Append ``array`` to ``request`` as input ``name`` (used by clients and tests)."""
    tensor = request.inputs.add()
    tensor.name = name
    tensor.datatype = datatypes.from_numpy(array.dtype)
    tensor.shape.extend(array.shape)
    if raw:
        request.raw_input_contents.append(to_raw(array))
    else:
        tensor.contents.CopyFrom(to_contents(array))


def decode_response_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Every output of a ModelInferResponse by name (raw or typed)."""
    raws = response.raw_output_contents
    result: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(response.outputs):
        shape = list(tensor.shape)
        if raws:
            result[tensor.name] = decode_raw(tensor.name, tensor.datatype, shape, raws[index])
        else:
            result[tensor.name] = decode_contents(tensor.name, tensor.datatype, shape, tensor.contents)
    return result


# Parameters of a requested output that mdeploy understands ("binary_data" is an HTTP notion
# that tritonclient may forward; it changes nothing over gRPC).
_OUTPUT_PARAMETERS = {"binary_data"}


def requested_outputs(request: pb.ModelInferRequest) -> list[str]:
    """The output names a request asks for (none: every output)."""
    names = []
    for output in request.outputs:
        unknown = set(output.parameters) - _OUTPUT_PARAMETERS
        if "classification" in unknown:
            raise Unsupported(f"output '{output.name}': the classification extension is not supported")
        names.append(output.name)
    return names
