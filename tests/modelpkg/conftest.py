from __future__ import annotations

from pathlib import Path

import pytest

from examples.digits import build_demo_packages
from modelpkg import build
from tests.converters.test_onnx_model import ROWS, affine
from tests.modelpkg.zips import FIXED_TIME


@pytest.fixture(scope="session")
def affine_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid package built from a hand-written ONNX model (no TensorFlow needed)."""
    path = tmp_path_factory.mktemp("affine") / "affine.pkg"
    build(affine(), path, name="affine", samples=ROWS, created_at=FIXED_TIME, code_dir=None)
    return path


@pytest.fixture(scope="session")
def demo_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = build_demo_packages(tmp_path_factory.mktemp("demo"), created_at=FIXED_TIME)
    return {path.stem: path for path in paths}
