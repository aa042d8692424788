"""Requests checked against a signature: the batch size of a good one, what to fix in a bad one."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from core.signature import Signature, TensorSpec
from core.validation import check_inputs, check_outputs

SIGNATURE = Signature(
    inputs=(TensorSpec("pixels", "FP32", (-1, 4)), TensorSpec("ids", "INT64", (-1,))),
    outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("scores", "FP32", (-1, 3))),
)


def _inputs(rows: int = 2, **changes: np.ndarray) -> dict[str, np.ndarray]:
    inputs: dict[str, np.ndarray] = {
        "pixels": np.zeros((rows, 4), np.float32),
        "ids": np.arange(rows, dtype=np.int64),
    }
    return {**inputs, **changes}


def test_a_matching_request_gives_its_batch_size_again_and_again() -> None:
    for _ in range(3):  # the first call works the signature out, the next ones reuse it
        assert check_inputs(SIGNATURE, _inputs(3), max_batch_size=8) == 3
    assert check_inputs(SIGNATURE, _inputs(1), max_batch_size=0) == 1
    big_endian = _inputs(2, pixels=np.zeros((2, 4), ">f4"))  # FP32 all the same
    assert check_inputs(SIGNATURE, big_endian, max_batch_size=8) == 2


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (_inputs(2, pixels=np.zeros((2, 4), np.float64)), "datatype FP64 does not match the model's FP32"),
        (_inputs(2, pixels=np.zeros((2, 5), np.float32)), r"shape \[2, 5\] does not match"),
        (_inputs(2, ids=np.arange(3, dtype=np.int64)), "disagree on the batch size"),
        (_inputs(9), "larger than the model's max_batch_size 8"),
        (_inputs(0), "at least 1"),
        ({"pixels": np.zeros((2, 4), np.float32)}, "missing input 'ids'"),
        ({**_inputs(2), "extra": np.zeros(2, np.float32)}, "unknown input 'extra'"),
    ],
)
def test_a_bad_request_is_told_what_to_fix(inputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_inputs(SIGNATURE, inputs, max_batch_size=8)


def test_outputs_default_to_all_and_unknown_ones_are_refused() -> None:
    assert check_outputs(SIGNATURE, []) == ("label", "scores")
    assert check_outputs(SIGNATURE, ["scores"]) == ("scores",)
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        check_outputs(SIGNATURE, ["nope"])
