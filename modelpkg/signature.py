"""The manifest signature read from an ONNX graph, and checked against one."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from converters.rename import graph_inputs
from core.datatypes import from_onnx, to_numpy
from core.errors import ConversionError, InvalidInput, PackageError
from modelpkg.manifest import ManifestSignature, ManifestTensor


def _datatype(value: onnx.ValueInfoProto) -> str:
    if not value.type.HasField("tensor_type"):
        kind = value.type.WhichOneof("value") or "untyped value"
        raise ConversionError(f"{value.name!r} is a {kind}; only tensors can be served")
    try:
        return from_onnx(value.type.tensor_type.elem_type)
    except InvalidInput as exc:
        raise ConversionError(f"{value.name!r}: {exc.message}") from None


def onnx_shape(value: onnx.ValueInfoProto) -> list[int] | None:
    """Dimensions of a graph input or output, -1 where symbolic; None when the rank is unknown."""
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim]


def fill_output_shapes(model: onnx.ModelProto, outputs: Mapping[str, np.ndarray]) -> None:
    """Declare ``[batch, ...]`` shapes the converter left unknown, from the observed outputs."""
    for value in model.graph.output:
        sample = outputs.get(value.name)
        if onnx_shape(value) is None and sample is not None and sample.ndim:
            shape = value.type.tensor_type.shape
            shape.dim.add().dim_param = "batch"
            for size in sample.shape[1:]:
                shape.dim.add().dim_value = size


def signature_of(model: onnx.ModelProto) -> ManifestSignature:
    """The signature of a converted model; every input and output must have a known rank."""
    return ManifestSignature(
        inputs=[_spec(value) for value in graph_inputs(model.graph)],
        outputs=[_spec(value) for value in model.graph.output],
    )


def _spec(value: onnx.ValueInfoProto) -> ManifestTensor:
    shape = onnx_shape(value)
    if shape is None:
        raise ConversionError(f"the shape of {value.name!r} is unknown; cannot write its signature")
    return ManifestTensor(name=value.name, datatype=_datatype(value), shape=shape)


def check_signature(model: onnx.ModelProto, signature: ManifestSignature) -> None:
    """model.onnx must take and return exactly what the manifest says it does."""
    for kind, values, specs in (
        ("input", graph_inputs(model.graph), signature.inputs),
        ("output", list(model.graph.output), signature.outputs),
    ):
        names = [value.name for value in values]
        if names != [spec.name for spec in specs]:
            raise PackageError(f"model.onnx {kind}s are {names}; the manifest says {[s.name for s in specs]}")
        for value, spec in zip(values, specs, strict=True):
            _check_value(kind, value, spec)


def _check_value(kind: str, value: onnx.ValueInfoProto, spec: ManifestTensor) -> None:
    try:
        datatype = _datatype(value)
    except ConversionError as exc:
        raise PackageError(f"model.onnx {kind} {exc.message}") from None
    if datatype != spec.datatype:
        raise PackageError(
            f"model.onnx {kind} {spec.name!r} is {datatype}; the manifest says {spec.datatype}"
        )
    shape = onnx_shape(value)
    if shape is not None and not shapes_compatible(spec.shape, shape):
        raise PackageError(
            f"model.onnx {kind} {spec.name!r} has shape {shape}; the manifest says {spec.shape}"
        )


def shapes_compatible(declared: list[int], actual: list[int] | tuple[int, ...]) -> bool:
    """Same rank and equal sizes wherever both are fixed (-1 matches anything)."""
    return len(declared) == len(actual) and all(
        d in (-1, a) or a == -1 for d, a in zip(declared, actual, strict=True)
    )


def check_array(kind: str, name: str, array: np.ndarray, spec: ManifestTensor) -> None:
    """A sample array must fit its signature entry in shape and type.

    Inputs are fed to the model, so their dtype must be the signature's. Outputs hold what
    the original framework returned (float64 probabilities for an FP32 output, say), so
    only numbers-versus-text must agree.
    """
    if not _dtype_fits(kind, array.dtype, to_numpy(spec.datatype)):
        raise PackageError(f"sample {kind} {name!r} is {array.dtype}; the signature says {spec.datatype}")
    if not shapes_compatible(spec.shape, array.shape):
        raise PackageError(
            f"sample {kind} {name!r} has shape {list(array.shape)}; the signature says {spec.shape}"
        )


def _dtype_fits(kind: str, actual: np.dtype, declared: np.dtype) -> bool:
    if declared.kind == "O":
        return actual.kind in "US"
    if kind == "input":
        return actual == declared
    return actual.kind in "biuf"
