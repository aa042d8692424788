"""Checks of a request against a model version's signature, before anything runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mdeploy.errors import InvalidInput
from mdeploy.signature import Signature, TensorSpec
from protos import datatypes


def _shape_error(spec: TensorSpec, shape: tuple[int, ...], batched: bool) -> InvalidInput:
    expected = [
        "batch" if batched and i == 0 else ("any" if d == -1 else d) for i, d in enumerate(spec.shape)
    ]
    return InvalidInput(f"input '{spec.name}': shape {list(shape)} does not match the model's {expected}")


def check_input(spec: TensorSpec, array: np.ndarray, batched: bool) -> None:
    """Datatype and shape of one input, compared with its spec."""
    datatype = datatypes.from_numpy(array.dtype)
    if datatype != spec.datatype:
        raise InvalidInput(
            f"input '{spec.name}': datatype {datatype} does not match the model's {spec.datatype}"
        )
    shape = tuple(array.shape)
    if len(shape) != len(spec.shape):
        raise _shape_error(spec, shape, batched)
    for actual, declared in zip(shape, spec.shape, strict=True):
        if declared != -1 and actual != declared:
            raise _shape_error(spec, shape, batched)


def check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray], max_batch_size: int) -> int:
    """Validate every input; return the request's batch size (1 for a model without batching)."""
    known = {spec.name for spec in signature.inputs}
    unknown = sorted(set(inputs) - known)
    if unknown:
        raise InvalidInput(f"unknown input {unknown[0]!r}; the model's inputs are {sorted(known)}")
    missing = [spec.name for spec in signature.inputs if spec.name not in inputs]
    if missing:
        raise InvalidInput(f"missing input {missing[0]!r}; the model's inputs are {sorted(known)}")
    batched = max_batch_size > 0
    for spec in signature.inputs:
        check_input(spec, inputs[spec.name], batched)
    if not batched:
        return 1
    rows = {spec.name: inputs[spec.name].shape[0] for spec in signature.inputs}
    sizes = set(rows.values())
    if len(sizes) > 1:
        raise InvalidInput(f"inputs disagree on the batch size (first dimension): {rows}")
    size = sizes.pop() if sizes else 1
    if size < 1:
        raise InvalidInput("batch size (first dimension) must be at least 1")
    if size > max_batch_size:
        raise InvalidInput(f"batch size {size} is larger than the model's max_batch_size {max_batch_size}")
    return int(size)


def check_outputs(signature: Signature, requested: Sequence[str]) -> tuple[str, ...]:
    """The output names to return: the requested ones (each must exist), or all."""
    if not requested:
        return tuple(spec.name for spec in signature.outputs)
    known = [spec.name for spec in signature.outputs]
    for name in requested:
        if name not in known:
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are {sorted(known)}")
    if len(set(requested)) != len(requested):
        raise InvalidInput("an output is requested more than once")
    return tuple(requested)
