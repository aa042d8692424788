"""The tensors a model version takes and returns, as the server checks requests against them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: v2 datatype and full shape (-1 for a variable dimension).

    For a batching model the first dimension is the batch dimension and is -1.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)


def dims_compatible(declared: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    """Whether two shapes can describe the same tensor (-1 matches any size)."""
    return len(declared) == len(actual) and all(
        d == a or d == -1 or a == -1 for d, a in zip(declared, actual, strict=True)
    )


def narrower(first: tuple[int, ...], second: tuple[int, ...]) -> tuple[int, ...]:
    """The more specific of two compatible shapes, dimension by dimension."""
    return tuple(a if a != -1 else b for a, b in zip(first, second, strict=True))
