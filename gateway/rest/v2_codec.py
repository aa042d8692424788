"""KServe v2 JSON (and Triton's binary-data extension) ⇄ the data plane's request and result.

With the extension, the body is a JSON header of ``Inference-Header-Content-Length`` bytes
followed by the raw tensors of the inputs whose ``parameters.binary_data_size`` is set, in
input order; outputs asked for with ``binary_data`` come back the same way. This is what
``tritonclient.http`` sends and expects by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from core import datatypes
from core.errors import InvalidInput, Unsupported
from gateway.dataplane import InferenceResult
from gateway.rest.arrays import to_array, to_json_data
from protos import codecs

HEADER_LENGTH = "inference-header-content-length"
_MAX_INPUTS = 256


@dataclass(slots=True)  # per request: a frozen dataclass costs ~4x to build
class V2Request:
    id: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    binary_outputs: frozenset[str]
    all_binary: bool


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _shape(name: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise InvalidInput(f"input '{name}': shape must be a list of integers")
    codecs.element_count(name, value)
    return value


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH} must be the byte length of the JSON part (body has {len(body)} bytes)"
        )
    length = int(header_length)
    return body[:length], memoryview(body)[length:]


def _decode_input(item: Any, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    tensor = _object(item, "each input")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("each input needs a 'name'")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"input '{name}': 'datatype' must be a v2 datatype name such as FP32")
    datatypes.to_numpy(datatype)
    shape = _shape(name, tensor.get("shape"))
    parameters = _object(tensor.get("parameters", {}), f"input '{name}' parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise InvalidInput(
                f"input '{name}': binary_data_size {size!r} does not fit the binary part of the body"
            )
        return (
            name,
            codecs.decode_raw(name, datatype, shape, bytes(binary[offset : offset + size])),
            offset + size,
        )
    if "data" not in tensor:
        raise InvalidInput(f"input '{name}' needs 'data' (or binary data with parameters.binary_data_size)")
    array = to_array(f"input '{name}'", datatype, tensor["data"])
    if array.size != codecs.element_count(name, shape):
        raise InvalidInput(
            f"input '{name}': data has {array.size} elements but shape {shape} needs {int(np.prod(shape))}"
        )
    return name, array.reshape(shape), offset


def parse_request(body: bytes, header_length: str | None) -> V2Request:
    json_part, binary = _split_body(body, header_length)
    try:
        document = _object(orjson.loads(json_part), "the request body")
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"the request body is not valid JSON: {error}") from None
    items = document.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidInput("'inputs' must be a non-empty list")
    if len(items) > _MAX_INPUTS:
        raise InvalidInput(f"at most {_MAX_INPUTS} inputs are accepted")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in items:
        name, array, offset = _decode_input(item, binary, offset)
        if name in inputs:
            raise InvalidInput(f"input '{name}' appears more than once")
        inputs[name] = array
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data belong to no input")
    outputs, binary_outputs = _requested_outputs(document.get("outputs", []))
    parameters = _object(document.get("parameters", {}), "'parameters'")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    return V2Request(
        request_id, inputs, outputs, binary_outputs, parameters.get("binary_data_output") is True
    )


def _requested_outputs(items: Any) -> tuple[tuple[str, ...], frozenset[str]]:
    if not isinstance(items, list):
        raise InvalidInput("'outputs' must be a list")
    names: list[str] = []
    binary: set[str] = set()
    for item in items:
        output = _object(item, "each output")
        name = output.get("name")
        if not isinstance(name, str):
            raise InvalidInput("each output needs a 'name'")
        parameters = _object(output.get("parameters", {}), f"output '{name}' parameters")
        if "classification" in parameters:
            raise Unsupported(f"output '{name}': the classification extension is not supported")
        if parameters.get("binary_data") is True:
            binary.add(name)
        names.append(name)
    return tuple(names), frozenset(binary)


def render_response(request: V2Request, result: InferenceResult) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (binary-extension headers when any output is binary)."""
    outputs = []
    chunks: list[bytes] = []
    for name, array in result.outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatypes.from_numpy(array.dtype),
            "shape": list(array.shape),
        }
        if request.all_binary or name in request.binary_outputs:
            raw = codecs.to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json_data(array.reshape(-1))
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": result.model,
        "model_version": result.version,
        "outputs": outputs,
    }
    if request.id:
        document["id"] = request.id
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"content-type": "application/json"}
    return b"".join([header, *chunks]), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }
