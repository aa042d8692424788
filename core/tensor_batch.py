"""Requests of tensors merged into one batch along the first dimension, and split back.

The server (before onnxruntime) and the gateway (before a backend call) batch the same way:
requests whose non-batch dimensions agree share a batch; outputs are sliced back by rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.batching import Batcher, BatchPolicy, RunBatch
from core.errors import Internal

Tensors = dict[str, np.ndarray]


@dataclass(slots=True)  # per request: a frozen dataclass costs ~4x to build
class TensorRequest:
    """A validated request waiting for a batch: its inputs, wanted outputs and row count."""

    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...]
    rows: int

    @property
    def key(self) -> tuple[tuple[int, ...], ...]:
        # Only requests whose non-batch dimensions agree can share a batch.
        return tuple([array.shape[1:] for array in self.inputs.values()])


def batcher(
    policy: BatchPolicy, run: RunBatch[TensorRequest, Tensors], name: str
) -> Batcher[TensorRequest, Tensors]:
    """A batcher that counts rows and keeps requests of different shapes apart."""
    return Batcher(policy, run, size_of=lambda r: r.rows, key_of=lambda r: r.key, name=name)


def merge(requests: Sequence[TensorRequest], input_names: Sequence[str]) -> Tensors:
    """Each input concatenated over the requests (a lone request's arrays as they are)."""
    if len(requests) == 1:
        return {name: np.ascontiguousarray(requests[0].inputs[name]) for name in input_names}
    return {name: np.concatenate([r.inputs[name] for r in requests]) for name in input_names}


def wanted_outputs(requests: Sequence[TensorRequest]) -> list[str]:
    """Every output any request of the batch asked for, in a stable order."""
    return sorted({name for r in requests for name in r.outputs})


def split(
    requests: Sequence[TensorRequest], outputs: Mapping[str, np.ndarray], model: str
) -> list[Tensors | BaseException]:
    """Each request's rows of the outputs it asked for; an output without the batch's rows fails all."""
    if len(requests) == 1:
        return [{name: outputs[name] for name in requests[0].outputs}]
    total = sum(r.rows for r in requests)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            error = Internal(f"model '{model}': output '{name}' has no batch dimension of {total}")
            return [error] * len(requests)
    results: list[Tensors | BaseException] = []
    offset = 0
    for r in requests:
        results.append({name: outputs[name][offset : offset + r.rows] for name in r.outputs})
        offset += r.rows
    return results
