"""numpy ⇄ v2 tensors for every datatype onnxruntime supports, raw and typed."""

from __future__ import annotations

import numpy as np
import pytest

from core import datatypes
from core.errors import InvalidInput
from protos import codecs
from protos.generated import inference_pb2 as pb

SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False], [False, True]]),
    "INT8": np.array([[-128, 127]], dtype=np.int8),
    "INT16": np.array([[-32768, 32767]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1]], dtype=np.int64),
    "UINT8": np.array([[0, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**64 - 1]], dtype=np.uint64),
    "FP16": np.array([[0.5, -65504.0]], dtype=np.float16),
    "FP32": np.array([[1.5, -3.25], [np.inf, 0.0]], dtype=np.float32),
    "FP64": np.array([[1e300, -1e-300]], dtype=np.float64),
    "BYTES": np.array([[b"", b"\x00\xff"], [b"abc", "é".encode()]], dtype=np.object_),
}


def _round_trip(array: np.ndarray, raw: bool) -> np.ndarray:
    request = pb.ModelInferRequest()
    codecs.encode_input(request, "t", array, raw=raw)
    wire = pb.ModelInferRequest.FromString(request.SerializeToString())
    return codecs.decode_request_inputs(wire)["t"]


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_raw_round_trip_is_exact(datatype: str) -> None:
    array = SAMPLES[datatype]
    decoded = _round_trip(array, raw=True)
    assert decoded.dtype == datatypes.to_numpy(datatype)
    assert decoded.shape == array.shape
    assert decoded.tolist() == array.tolist()


@pytest.mark.parametrize("datatype", [d for d in SAMPLES if d != "FP16"])
def test_typed_round_trip_is_exact(datatype: str) -> None:
    array = SAMPLES[datatype]
    decoded = _round_trip(array, raw=False)
    assert decoded.dtype == datatypes.to_numpy(datatype)
    assert decoded.tolist() == array.tolist()


def test_fp16_typed_contents_are_refused_with_advice() -> None:
    with pytest.raises(InvalidInput, match="raw"):
        codecs.to_contents(SAMPLES["FP16"])


def test_every_onnxruntime_datatype_is_covered() -> None:
    assert set(SAMPLES) == set(datatypes.V2_DATATYPES)


def test_raw_length_mismatch_names_the_input_and_expectation() -> None:
    with pytest.raises(InvalidInput, match=r"input 'a': raw content has 7 bytes, expected 8"):
        codecs.decode_raw("a", "FP32", [2], b"\x00" * 7)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x05\x00\x00\x00ab", "declares 5 bytes but only 2 remain"),
        (b"\x01\x00", "truncated length"),
        (b"\x01\x00\x00\x00a", "expected 2 BYTES elements, got 1"),
    ],
)
def test_malformed_bytes_tensors_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        codecs.decode_raw("s", "BYTES", [2], raw)


def test_out_of_range_typed_value_is_refused() -> None:
    contents = pb.InferTensorContents(int_contents=[1000])
    with pytest.raises(InvalidInput, match="out of range for INT8"):
        codecs.decode_contents("small", "INT8", [1], contents)


def test_negative_dimension_is_refused() -> None:
    with pytest.raises(InvalidInput, match="negative dimension"):
        codecs.element_count("n", [3, -1])


def test_datatype_names_map_to_config_enums() -> None:
    assert datatypes.to_config_enum_name("BYTES") == "TYPE_STRING"
    assert datatypes.from_config_enum_name("TYPE_FP16") == "FP16"
    for name in datatypes.V2_DATATYPES:
        assert datatypes.from_onnx(datatypes.to_onnx(name)) == name
        assert datatypes.from_config_enum_name(datatypes.to_config_enum_name(name)) == name
