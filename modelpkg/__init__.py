"""The model package (``model.pkg``): build it, read it safely, check its samples.

Importing this package loads neither TensorFlow nor scikit-learn: conversion imports them
when a model of theirs is built, and reading a package needs only onnx and onnxruntime.
"""

from __future__ import annotations

from converters.parity import ParityReport
from modelpkg.archive import Limits
from modelpkg.builder import DEFAULT_TOLERANCE, BuiltPackage, Steps, build
from modelpkg.manifest import (
    FORMAT_VERSION,
    Manifest,
    ManifestSignature,
    ManifestTensor,
    Parity,
    ServingHints,
)
from modelpkg.reader import Package, read_package
from modelpkg.samples import Samples
from modelpkg.verify import verify_samples

__all__ = [
    "DEFAULT_TOLERANCE",
    "FORMAT_VERSION",
    "BuiltPackage",
    "Limits",
    "Manifest",
    "ManifestSignature",
    "ManifestTensor",
    "Package",
    "Parity",
    "ParityReport",
    "Samples",
    "ServingHints",
    "Steps",
    "build",
    "read_package",
    "verify_samples",
]
