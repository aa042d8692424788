"""Inputs/outputs take the signature's names; internal names become canonical."""

from __future__ import annotations

import numpy as np
import onnx

from converters.parity import run_onnx
from converters.rename import canonicalize, dynamic_batch, rename_io
from tests.converters.test_onnx_model import ROWS, affine


def _names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    return [value.name for value in model.graph.input], [value.name for value in model.graph.output]


def test_renamed_inputs_and_outputs_still_run() -> None:
    model = affine()
    expected = run_onnx(model.SerializeToString(), {"x": ROWS})["y"]
    rename_io(model, {"x": "features", "y": "scores"})
    assert _names(model) == (["features"], ["scores"])
    np.testing.assert_array_equal(run_onnx(model.SerializeToString(), {"features": ROWS})["scores"], expected)


def test_a_new_name_taken_by_an_internal_tensor_moves_that_tensor_aside() -> None:
    model = affine()
    rename_io(model, {"y": "xw"})  # "xw" is the MatMul's output inside the graph
    assert _names(model) == (["x"], ["xw"])
    assert model.graph.node[0].output[0] != "xw"
    assert run_onnx(model.SerializeToString(), {"x": ROWS})["xw"].shape == (5, 3)


def test_canonical_names_do_not_depend_on_the_original_names() -> None:
    first, second = affine(), affine()
    for node in second.graph.node:
        node.name = f"StatefulPartitionedCall/{node.op_type}_42"
    rename_io(second, {"xw": "tmp__17", "w": "weights:0"})
    second.doc_string = "converted from /tmp/xyz"
    canonicalize(first)
    canonicalize(second)
    assert first.SerializeToString() == second.SerializeToString()
    assert _names(first) == (["x"], ["y"])


def test_dynamic_batch_makes_the_first_dimension_symbolic() -> None:
    model = affine()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    dynamic_batch(model)
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        assert dim.dim_param == "batch"
        assert not dim.HasField("dim_value")
