"""ONNX models pass through: checked, optionally upgraded, run as the parity reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from converters.onnx_model import convert_onnx, default_opset
from core.errors import ConversionError
from tests.converters.support import parity


def affine(opset: int = 17) -> onnx.ModelProto:
    """y = x @ w + b with x [batch, 4]."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])],
        [
            numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


ROWS = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)


def test_onnx_model_passes_through_unchanged() -> None:
    model = affine()
    converted = convert_onnx(model)
    assert converted.model is model
    assert parity(converted, ROWS).max_abs_error == 0.0
    assert (converted.input_names, converted.output_names) == (("x",), ("y",))


def test_onnx_file_loads_and_is_its_own_source(tmp_path: Path) -> None:
    path = tmp_path / "affine.onnx"
    onnx.save(affine(), path)
    converted = convert_onnx(path)
    assert converted.source == path
    assert parity(converted, ROWS).passed


def test_older_opset_is_upgraded_on_request() -> None:
    converted = convert_onnx(affine(opset=13), opset=17)
    assert default_opset(converted.model) == 17
    assert parity(converted, ROWS).passed
    assert converted.converter.endswith("version converter")


def test_invalid_onnx_fails_the_checker_with_its_reason() -> None:
    model = affine()
    model.graph.node[1].input[0] = "missing"
    with pytest.raises(ConversionError, match="fails the ONNX checker"):
        convert_onnx(model)


def test_unreadable_onnx_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\xff\xfe junk")
    with pytest.raises(ConversionError, match="cannot load an ONNX model"):
        convert_onnx(path)
