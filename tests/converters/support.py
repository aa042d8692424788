"""Models trained once per test session, shared by the converter and package tests."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from converters.base import Converted
from converters.parity import ParityReport, compare, run_onnx
from converters.rename import graph_inputs
from examples.digits import Digits, load_data, train_keras, train_sklearn


@functools.cache
def digits() -> Digits:
    return load_data()


@functools.cache
def keras_model() -> Any:
    """The demo network, trained briefly: parity does not need a good model."""
    return train_keras(digits(), epochs=2)


@functools.cache
def sklearn_pipeline() -> Any:
    return train_sklearn(digits())


def parity(converted: Converted, *arrays: np.ndarray, tolerance: float = 1e-5) -> ParityReport:
    """Run the original and the ONNX model on the same rows, inputs in graph order."""
    feeds = {
        value.name: array for value, array in zip(graph_inputs(converted.model.graph), arrays, strict=True)
    }
    return compare(converted.predict(feeds), run_onnx(converted.model.SerializeToString(), feeds), tolerance)
