"""Everything an upload must pass before the registry takes it: the serving side never runs
package code, so only a checked ONNX model may reach the repository and the servers.

The safe reader checks archive paths, sizes, entry hashes, the manifest schema, the ONNX
checker and external-data confinement; onnxruntime then loads the model and must reproduce
the package's sample outputs; and the model must be expressible as a Triton configuration.
CPU-bound: run it in a worker thread.
"""

from __future__ import annotations

from pathlib import Path

from gateway.registry.triton_config import model_config
from modelpkg import Limits, Package, read_package, verify_samples


def verify_upload(path: Path, limits: Limits) -> Package:
    """The package at ``path`` if it passes every check; PackageError (422) names the first failure."""
    package = read_package(path, limits)
    verify_samples(package)
    model_config(package.manifest.name, package.manifest, [1])
    return package
