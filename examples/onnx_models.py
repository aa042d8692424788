"""Small ONNX models built directly with onnx.helper: demo, test and benchmark fixtures.

``mlp`` makes a ReLU network with fixed-seed random weights (e.g. 64→64→10, the size of a
digits classifier, or 1024→2048→2048→10, a compute-bound one); ``int64_affine`` a model with
INT64 tensors. ``write_repository`` lays models out as a Triton model repository.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def mlp(sizes: list[int], seed: int = 0, input_name: str = "x", output_name: str = "y") -> onnx.ModelProto:
    """Dense layers with ReLU between them; batch dimension variable."""
    rng = np.random.default_rng(seed)
    nodes = []
    initializers = []
    current = input_name
    for layer, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.1).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{layer}"),
            numpy_helper.from_array(bias, f"b{layer}"),
        ]
        last = layer == len(sizes) - 2
        gemm_out = output_name if last else f"h{layer}"
        nodes.append(helper.make_node("Gemm", [current, f"w{layer}", f"b{layer}"], [gemm_out]))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [f"r{layer}"]))
            current = f"r{layer}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializers,
    )
    return _finish(graph)


def int64_affine(width: int = 4) -> onnx.ModelProto:
    """INT64 in, INT64 out: ``y = 3 * x + 1`` and ``total`` = row sums of x."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "three"], ["scaled"]),
            helper.make_node("Add", ["scaled", "one"], ["y"]),
            helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
        ],
        "int64_affine",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", width])],
        [
            helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", width]),
            helper.make_tensor_value_info("total", TensorProto.INT64, ["batch"]),
        ],
        [
            numpy_helper.from_array(np.array(3, dtype=np.int64), "three"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mdeploy-examples"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def write_version(
    root: Path, name: str, version: int, model: onnx.ModelProto, config: str | None = None
) -> Path:
    """Write ``<root>/<name>/<version>/model.onnx`` (and config.pbtxt when given)."""
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    if config is not None:
        (root / name / "config.pbtxt").write_text(config)
    return folder / "model.onnx"
