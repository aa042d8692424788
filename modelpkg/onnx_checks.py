"""Checks of ``model.onnx`` as uploaded: parseable, external data confined, ONNX checker.

A tensor may keep its data in another file (``data_location = EXTERNAL``); onnxruntime
then opens that path relative to the model. In a package such a file must be one of the
package's own top-level entries, so nothing outside the model's folder is ever read.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

import onnx
from google.protobuf.message import DecodeError

from converters.parity import first_line
from core.errors import PackageError
from modelpkg.manifest import MANIFEST_ENTRY, MODEL_ENTRY, SAMPLES_ENTRY, SOURCE_PREFIX

_RESERVED: Final = (MANIFEST_ENTRY, MODEL_ENTRY, SAMPLES_ENTRY)


def parse_model(raw: bytes) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(raw)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise PackageError(f"{MODEL_ENTRY} is not a valid ONNX model: {first_line(exc)}") from None
    return model


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            yield from _attribute_tensors(attribute)


def _attribute_tensors(attribute: onnx.AttributeProto) -> Iterator[onnx.TensorProto]:
    if attribute.HasField("t"):
        yield attribute.t
    yield from attribute.tensors
    if attribute.HasField("sparse_tensor"):
        yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
    if attribute.HasField("g"):
        yield from _graph_tensors(attribute.g)
    for graph in attribute.graphs:
        yield from _graph_tensors(graph)


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            for attribute in node.attribute:
                yield from _attribute_tensors(attribute)


def external_data(model: onnx.ModelProto, entries: Mapping[str, int]) -> list[str]:
    """Entries holding external tensor data; refuse references to anything else.

    ``entries`` maps the package's entry names to their sizes.
    """
    used: list[str] = []
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {item.key: item.value for item in tensor.external_data}
        location = info.get("location", "")
        _check_location(tensor.name, location, entries)
        _check_range(tensor.name, location, info, entries[location])
        if location not in used:
            used.append(location)
    return used


def _check_location(tensor: str, location: str, entries: Mapping[str, int]) -> None:
    flat = location and "/" not in location and "\\" not in location and location not in (".", "..")
    if not flat or location.startswith(SOURCE_PREFIX) or location not in entries or location in _RESERVED:
        raise PackageError(
            f"{MODEL_ENTRY} tensor {tensor!r} references external data {location!r} outside the package"
        )


def _check_range(tensor: str, location: str, info: Mapping[str, str], size: int) -> None:
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else size - offset
    except ValueError:
        raise PackageError(
            f"{MODEL_ENTRY} tensor {tensor!r} has a malformed external data offset/length"
        ) from None
    if offset < 0 or length < 0 or offset + length > size:
        raise PackageError(
            f"{MODEL_ENTRY} tensor {tensor!r} reads bytes {offset}..{offset + length} of {location!r}, "
            f"which has {size}"
        )


def check_model(model: onnx.ModelProto, raw: bytes, external: Mapping[str, bytes]) -> None:
    """The ONNX checker, on a temporary copy of the model's folder when it has external data."""
    try:
        if not external:
            onnx.checker.check_model(model)
            return
        with tempfile.TemporaryDirectory(prefix="mdeploy-check-") as folder:
            path = write_model(Path(folder), raw, external)
            onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise PackageError(f"{MODEL_ENTRY} fails the ONNX checker: {first_line(exc)}") from None


def write_model(folder: Path, raw: bytes, external: Mapping[str, bytes]) -> Path:
    """Write model.onnx and its external data files into ``folder``; return the model's path."""
    for name, data in external.items():
        (folder / name).write_bytes(data)
    path = folder / MODEL_ENTRY
    path.write_bytes(raw)
    return path
