"""What the data plane needs to know about models: which version serves, and its signature.

The registry implements :class:`ModelCatalog`; the data plane reads it on every request,
so ``resolve`` must be an in-memory lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.signature import Signature


@dataclass(frozen=True)
class ServedVersion:
    """A model version as requests see it. ``version`` is the backend's (Triton) version number."""

    name: str
    version: str
    signature: Signature
    max_batch_size: int
    labels: tuple[str, ...] = ()
    """Class names, when the package has them."""
    label_output: str | None = None
    """The output the labels index (e.g. probabilities)."""
    platform: str = "onnxruntime_onnx"


class ModelCatalog(Protocol):
    def resolve(self, name: str, version: str | None) -> ServedVersion:
        """The version asked for, or with None the newest loaded one (NotFound if none). Which
        version answers a request naming none is the router's to say, not the catalog's: None
        is for what every version shares, such as the signature."""
        ...

    def served_versions(self, name: str) -> list[ServedVersion]:
        """Every live version of ``name`` (NotFound for an unknown model)."""
        ...

    def model_names(self) -> list[str]:
        """Names of models with at least one live version."""
        ...
