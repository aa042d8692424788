"""What a push must pass before the registry takes it, and the version number it then gets.

Three checks, in the order a push meets them: the upload itself (the serving side never runs
package code, so only a checked ONNX model may reach the repository and the servers), the
model's other live versions (versions of one model are interchangeable), and the number.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from core.errors import Conflict
from gateway.registry.triton_config import model_config
from modelpkg import Limits, Manifest, ManifestTensor, Package, read_package, verify_samples

# ---- the upload ----
# Everything an upload must pass before the registry takes it: the serving side never runs
# package code, so only a checked ONNX model may reach the repository and the servers.
#
# The safe reader checks archive paths, sizes, entry hashes, the manifest schema, the ONNX
# checker and external-data confinement; onnxruntime then loads the model and must reproduce
# the package's sample outputs; and the model must be expressible as a Triton configuration.
# CPU-bound: run it in a worker thread.


def verify_upload(path: Path, limits: Limits) -> Package:
    """The package at ``path`` if it passes every check; PackageError (422) names the first failure."""
    package = read_package(path, limits)
    verify_samples(package)
    model_config(package.manifest.name, package.manifest, [1])
    return package


# ---- the other live versions ----
# The versions of one model are interchangeable: same signature, same labels.
#
# Clients call a model by name and the gateway picks the version (default today, canary and
# bandit arms later), so every live version must accept the same request and answer in the
# same terms. Triton agrees: one config.pbtxt describes every version folder. A package that
# changes the signature or the labels is a different model; it gets a new name, or replaces
# the old versions once they are deleted.


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


def _renaming_hint(kind: str, new: list[ManifestTensor], live: list[ManifestTensor]) -> str:
    """When only the names differ, the package flags that give the live names."""
    same_but_names = len(new) == len(live) and all(
        (a.datatype, a.shape) == (b.datatype, b.shape) for a, b in zip(new, live, strict=True)
    )
    if not same_but_names:
        return ""
    flags = " ".join(f"--{kind}-name {spec.name}" for spec in live)
    return f" (only the names differ: package it again with {flags})"


def _describe(specs: list[ManifestTensor]) -> str:
    return ", ".join(f"{s.name} {s.datatype} {s.shape}" for s in specs)


# ---- the version number ----
# Backend version numbers: Triton names version folders with positive integers.
#
# A package's own version is free text (``1``, ``2.3.0``, ``2024-05-rc1``). The registry gives
# each version of a model a number:
#
# * the package's version, when it is a positive integer written plainly (``7``, not ``07``)
#   that this model has never used;
# * otherwise the next number after the highest this model has ever used.
#
# Numbers are never reused, even after a delete, so a number names one package forever (logs,
# audit events and client pins stay unambiguous). Listings show both: ``version`` is the
# number, ``package_version`` the package's own string.


MAX_VERSION = 2**63 - 1
"""Triton keeps version numbers in an int64."""


def choose_version(package_version: str, used: Collection[int]) -> int:
    """The number of a new version whose package says ``package_version``."""
    wanted = _plain_positive(package_version)
    if wanted is not None and wanted not in used:
        return wanted
    following = max(used, default=0) + 1
    if following > MAX_VERSION:
        raise Conflict(f"no version number is left after {max(used)}; the highest allowed is {MAX_VERSION}")
    return following


def _plain_positive(text: str) -> int | None:
    if not text.isdecimal() or not text.isascii() or text.startswith("0"):
        return None
    number = int(text)
    return number if number <= MAX_VERSION else None
