from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from examples.digits import Digits
from tests.converters import support


@pytest.fixture(scope="session")
def digits() -> Digits:
    return support.digits()


@pytest.fixture(scope="session")
def samples(digits: Digits) -> np.ndarray:
    return digits.x_test[:16]


@pytest.fixture(scope="session")
def keras_model() -> Any:
    return support.keras_model()


@pytest.fixture(scope="session")
def pipeline() -> Any:
    return support.sklearn_pipeline()
