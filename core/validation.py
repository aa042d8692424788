"""Checks of a request against a model version's signature, before anything runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core import datatypes
from core.errors import InvalidInput
from core.signature import Signature, TensorSpec


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
    matched = _rows_if_all_match(signature, inputs, max_batch_size)
    if matched is not None:
        return matched
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
        return _facts(signature).outputs
    known = [spec.name for spec in signature.outputs]
    for name in requested:
        if name not in known:
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are {sorted(known)}")
    if len(set(requested)) != len(requested):
        raise InvalidInput("an output is requested more than once")
    return tuple(requested)


@dataclass(frozen=True)
class _SignatureFacts:
    inputs: tuple[tuple[TensorSpec, np.dtype], ...]
    outputs: tuple[str, ...]


# id(signature) → (signature, facts); the signature is kept so that its id is never reused.
_FACTS: dict[int, tuple[Signature, _SignatureFacts]] = {}


def _facts(signature: Signature) -> _SignatureFacts:
    """What every request's check needs of a signature, worked out once per signature object
    (hashing a frozen signature per request would cost as much as the check)."""
    found = _FACTS.get(id(signature))
    if found is not None and found[0] is signature:
        return found[1]
    facts = _SignatureFacts(
        tuple((spec, datatypes.to_numpy(spec.datatype)) for spec in signature.inputs),
        tuple(spec.name for spec in signature.outputs),
    )
    if len(_FACTS) >= 1024:
        _FACTS.clear()
    _FACTS[id(signature)] = (signature, facts)
    return facts


def _rows_if_all_match(
    signature: Signature, inputs: Mapping[str, np.ndarray], max_batch_size: int
) -> int | None:
    """The batch size of a request whose every input matches exactly; None leaves the verdict
    (and the message that says what to fix) to the full check."""
    expected = _facts(signature).inputs
    if len(inputs) != len(expected):
        return None
    batched = max_batch_size > 0
    size = None
    for spec, dtype in expected:
        array = inputs.get(spec.name)
        if array is None or array.dtype != dtype:
            return None
        shape = array.shape
        if len(shape) != len(spec.shape):
            return None
        for actual, declared in zip(shape, spec.shape, strict=True):
            if declared != -1 and actual != declared:
                return None
        if batched:
            if not shape or (size is not None and shape[0] != size):
                return None
            size = shape[0]
    if not batched:
        return 1
    if size is None or not 1 <= size <= max_batch_size:
        return None
    return int(size)
