"""The versions of one model are interchangeable: same signature, same labels.

Clients call a model by name and the gateway picks the version (default today, canary and
bandit arms later), so every live version must accept the same request and answer in the
same terms. Triton agrees: one config.pbtxt describes every version folder. A package that
changes the signature or the labels is a different model; it gets a new name, or replaces
the old versions once they are deleted.
"""

from __future__ import annotations

from core.errors import Conflict
from modelpkg import Manifest, TensorSpec


def check_compatible(name: str, new: Manifest, live: Manifest, live_version: int) -> None:
    """Raise Conflict, naming the first difference, unless ``new`` can serve beside ``live``."""
    difference = _difference(new, live)
    if difference is not None:
        raise Conflict(
            f"the package differs from live version {live_version} of model '{name}': {difference}; "
            "versions of one model must be interchangeable, so push it under another model name, "
            "or delete the live versions first"
        )


def _difference(new: Manifest, live: Manifest) -> str | None:
    for kind, new_specs, live_specs in (
        ("input", new.signature.inputs, live.signature.inputs),
        ("output", new.signature.outputs, live.signature.outputs),
    ):
        if new_specs != live_specs:
            found = f"{kind}s are {_describe(new_specs)}, live: {_describe(live_specs)}"
            return found + _renaming_hint(kind, new_specs, live_specs)
    if new.labels != live.labels:
        return "the labels differ"
    return None


def _renaming_hint(kind: str, new: list[TensorSpec], live: list[TensorSpec]) -> str:
    """When only the names differ, the package flags that give the live names."""
    same_but_names = len(new) == len(live) and all(
        (a.datatype, a.shape) == (b.datatype, b.shape) for a, b in zip(new, live, strict=True)
    )
    if not same_but_names:
        return ""
    flags = " ".join(f"--{kind}-name {spec.name}" for spec in live)
    return f" (only the names differ: package it again with {flags})"


def _describe(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {s.datatype} {s.shape}" for s in specs)
