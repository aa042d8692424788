"""TF-Serving JSON answers: each instance gets its own slice of every output."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from core.errors import InvalidInput
from core.signature import Signature, TensorSpec
from gateway.catalog import ServedVersion
from gateway.dataplane import InferenceResult
from gateway.rest import v1_codec

SERVED = ServedVersion(
    "digits",
    "3",
    Signature(
        (TensorSpec("pixels", "FP32", (-1, 4)),),
        (
            TensorSpec("label", "INT64", (-1,)),
            TensorSpec("probabilities", "FP16", (-1, 2)),
            TensorSpec("name", "BYTES", (-1,)),
        ),
    ),
    max_batch_size=8,
)


def answer(outputs: dict[str, np.ndarray], rows: bool) -> object:
    body = orjson.dumps({"instances" if rows else "inputs": [[0.0] * 4, [1.0] * 4]})
    request = v1_codec.parse_request(body, SERVED)
    result = InferenceResult(SERVED.name, SERVED.version, outputs, SERVED)
    return orjson.loads(v1_codec.render_response(request, result, with_labels=False))


def test_rows_get_one_object_per_instance_with_scalars_for_one_value_outputs() -> None:
    outputs: dict[str, np.ndarray] = {
        "label": np.array([4, 7], np.int64),
        "probabilities": np.array([[0.25, 0.75], [1.0, 0.0]], np.float16),
        "name": np.array([b"four", b"\xff"], dtype=np.object_),
    }
    assert answer(outputs, rows=True) == {
        "model_version": "3",
        "predictions": [
            {"label": 4, "probabilities": [0.25, 0.75], "name": "four"},
            {"label": 7, "probabilities": [1.0, 0.0], "name": {"b64": "/w=="}},
        ],
    }


def test_one_output_rows_and_columns_are_the_whole_tensor() -> None:
    label = {"label": np.array([4, 7], np.int64)}
    assert answer(label, rows=True) == {"model_version": "3", "predictions": [4, 7]}
    assert answer(label, rows=False) == {"model_version": "3", "outputs": [4, 7]}


def test_a_string_in_a_numeric_input_names_the_input_once_without_nested_quotes() -> None:
    body = orjson.dumps({"instances": [["a", 0.0, 0.0, 0.0]]})
    with pytest.raises(InvalidInput) as caught:
        v1_codec.parse_request(body, SERVED)
    assert caught.value.message == "input 'pixels': FP32 data must be numbers"
