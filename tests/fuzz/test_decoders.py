"""Property tests of the gateway's JSON decoders: v1 ``instances``/``inputs``, v2 ``inputs``, and
Triton's binary-data extension.

The parse functions are called directly with generated bodies. Two properties hold for every
body, however malformed, huge, deeply nested, non-finite, wrongly typed or ragged:

- the decoder either returns arrays or raises an ``MdeployError`` with a 4xx status (a client
  error naming what to fix) - never another exception, which would be a 500;
- what it returns is what was sent: the values, the declared datatype and the declared shape.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core import datatypes
from core.errors import MdeployError, Unsupported
from core.signature import Signature, TensorSpec
from gateway.catalog import ServedVersion
from gateway.rest import v1_codec, v2_codec
from gateway.rest.arrays import to_array

T = TypeVar("T")

NUMERIC = (
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
)
DATATYPES = (*NUMERIC, "BYTES")
MAX_RANK = 16  # gateway.rest.arrays: deeper JSON data is refused

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def decoded_or_refused(call: Callable[[], T]) -> T | None:
    """``call()``'s result, or None when it refused the input as a client error.

    Any other exception fails the test: the REST layer would answer it 500.
    """
    try:
        return call()
    except MdeployError as error:
        refusal = error
    assert 400 <= refusal.http_status < 500, f"{type(refusal).__name__} ({refusal.http_status}): {refusal}"
    return None


def refuses(call: Callable[[], object]) -> str:
    """The message of the 4xx ``call()`` must raise."""
    with pytest.raises(MdeployError) as caught:
        call()
    assert 400 <= caught.value.http_status < 500, caught.value
    return caught.value.message


# ---- what valid tensors look like ----


def _elements(datatype: str) -> st.SearchStrategy[Any]:
    dtype = datatypes.to_numpy(datatype)
    if dtype.kind == "f":
        return hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
    return hnp.from_dtype(dtype)


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def bytes_tensors(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[np.ndarray, Any]:
    """A BYTES array and its JSON data: text elements as strings, others as ``{"b64": ...}``."""
    count = math.prod(shape)
    text = st.text(st.characters(codec="utf-8"), max_size=8).map(lambda t: (t.encode(), t))
    blobs = st.binary(max_size=8).map(lambda b: (b, {"b64": base64.b64encode(b).decode()}))
    pairs = draw(st.lists(text | blobs, min_size=count, max_size=count))
    array = np.empty(count, dtype=np.object_)
    array[:] = [raw for raw, _ in pairs]
    return array.reshape(shape), _nest([json for _, json in pairs], shape)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray, Any]:
    """(datatype, expected array, JSON data nested like the array); shapes of rank 0 to 4."""
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    if datatype == "BYTES":
        array, data = draw(bytes_tensors(shape))
        return datatype, array, data
    dtype = datatypes.to_numpy(datatype)
    array = draw(hnp.arrays(dtype, shape, elements=_elements(datatype)))
    return datatype, array, array.tolist()


def raw_bytes(array: np.ndarray) -> bytes:
    """The binary extension's form, written here independently of ``protos.codecs``."""
    if array.dtype == np.object_:
        return b"".join(struct.pack("<I", len(e)) + e for e in array.reshape(-1))
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    if expected.dtype == np.object_:
        assert actual.reshape(-1).tolist() == expected.reshape(-1).tolist()
    else:
        np.testing.assert_array_equal(actual, expected)


# ---- arbitrary JSON, for mutations ----

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=6)
    | st.sampled_from(["FP32", "BYTES", "x", "b64", "binary_data_size", "inputs"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(["b64"]), children, max_size=3
        )
    ),
    max_leaves=12,
)


def _slots(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON document (dict keys and list indexes)."""
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _slots(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _slots(child, (*path, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """``document`` with one to three places replaced by arbitrary JSON, deleted or wrapped."""
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_slots(document)))
        if not path:
            document = draw(json_values)
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "wrap"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "wrap":
            parent[path[-1]] = [parent[path[-1]]]
        else:
            parent[path[-1]] = draw(json_values)
    return document


# ---- v2 JSON ----


@st.composite
def v2_documents(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    count = draw(st.integers(1, 3))
    document: dict[str, Any] = {"inputs": []}
    expected: dict[str, np.ndarray] = {}
    for index in range(count):
        datatype, array, data = draw(tensors())
        flat = draw(st.booleans()) and array.ndim > 0
        name = f"in{index}"
        document["inputs"].append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "data": _flatten(data) if flat else data,
            }
        )
        expected[name] = array
    if draw(st.booleans()):
        document["id"] = draw(st.text(st.characters(codec="utf-8"), max_size=8))
    if draw(st.booleans()):
        document["outputs"] = [{"name": "y", "parameters": {"binary_data": draw(st.booleans())}}]
    return document, expected


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [leaf for item in data for leaf in _flatten(item)]
    return [data]


def _consistent_v2(document: Any, parsed: v2_codec.V2Request) -> None:
    """Whatever a (mutated) document decoded to, it is what the document declared."""
    items = document["inputs"]
    assert len(parsed.inputs) == len(items)
    for item in items:
        array = parsed.inputs[item["name"]]
        assert array.shape == tuple(item["shape"])
        assert array.dtype == datatypes.to_numpy(item["datatype"])


@FUZZ
@given(v2_documents())
def test_v2_json_decodes_to_what_was_sent(built: tuple[dict[str, Any], dict[str, np.ndarray]]) -> None:
    document, expected = built
    parsed = v2_codec.parse_request(orjson.dumps(document), None)
    assert parsed.inputs.keys() == expected.keys()
    for name, array in expected.items():
        assert_same(parsed.inputs[name], array)
    assert parsed.id == document.get("id", "")
    outputs = document.get("outputs", [])
    assert parsed.outputs == tuple(o["name"] for o in outputs)
    assert parsed.binary_outputs == {o["name"] for o in outputs if o["parameters"]["binary_data"]}


@settings(FUZZ, max_examples=400)
@given(st.data())
def test_v2_json_mutated_is_refused_or_consistent(data: st.DataObject) -> None:
    document, _ = data.draw(v2_documents())
    document = data.draw(mutated(document))
    parsed = decoded_or_refused(lambda: v2_codec.parse_request(orjson.dumps(document), None))
    if parsed is not None:
        _consistent_v2(document, parsed)


@FUZZ
@given(st.binary(max_size=256), st.none() | st.text(max_size=6) | st.integers(0, 2**64).map(str))
def test_v2_arbitrary_bytes_are_refused_or_decoded(body: bytes, header_length: str | None) -> None:
    decoded_or_refused(lambda: v2_codec.parse_request(body, header_length))


# ---- the binary-data extension ----


@st.composite
def binary_bodies(draw: st.DrawFn) -> tuple[bytes, str, dict[str, np.ndarray]]:
    """A body as tritonclient.http sends it: a JSON header, then the raw inputs in input order."""
    document, expected = draw(v2_documents())
    chunks = []
    for item in document["inputs"]:
        if draw(st.booleans()):
            raw = raw_bytes(expected[item["name"]])
            del item["data"]
            item["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
    document["parameters"] = {"binary_data_output": draw(st.booleans())}
    header = orjson.dumps(document)
    return b"".join([header, *chunks]), str(len(header)), expected


@FUZZ
@given(binary_bodies())
def test_binary_extension_decodes_to_what_was_sent(built: tuple[bytes, str, dict[str, np.ndarray]]) -> None:
    body, header_length, expected = built
    parsed = v2_codec.parse_request(body, header_length)
    for name, array in expected.items():
        assert_same(parsed.inputs[name], array)
    document = orjson.loads(body[: int(header_length)])
    assert parsed.all_binary is document["parameters"]["binary_data_output"]


@settings(FUZZ, max_examples=300)
@given(binary_bodies(), st.data())
def test_binary_extension_damaged_is_refused_or_consistent(
    built: tuple[bytes, str, dict[str, np.ndarray]], data: st.DataObject
) -> None:
    body, header_length, _ = built
    damage = data.draw(st.sampled_from(["truncate", "append", "header_length", "size", "flip"]))
    length = int(header_length)
    if damage == "truncate":
        body = body[: data.draw(st.integers(0, max(0, len(body) - 1)))]
    elif damage == "append":
        body += data.draw(st.binary(min_size=1, max_size=16))
    elif damage == "header_length":
        header_length = data.draw(
            st.integers(0, len(body) + 8).map(str)
            | st.sampled_from(["", "-1", "²", "٣", "1e3", " 12", "0x10"])
        )
    elif damage == "size":
        document = orjson.loads(body[:length])
        item = data.draw(st.sampled_from(document["inputs"]))
        item.setdefault("parameters", {})["binary_data_size"] = data.draw(
            st.integers(-8, 2**64 - 1) | json_scalars
        )
        header = orjson.dumps(document)
        body, header_length = header + body[length:], str(len(header))
    else:
        position = data.draw(st.integers(0, max(0, len(body) - 1)))
        body = body[:position] + bytes([data.draw(st.integers(0, 255))]) + body[position + 1 :]
    parsed = decoded_or_refused(lambda: v2_codec.parse_request(body, header_length))
    if parsed is not None:
        _consistent_v2(orjson.loads(body[: int(header_length)]), parsed)


@FUZZ
@given(binary_bodies(), st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=4))
def test_binary_extension_header_length_in_unicode_digits_is_refused(
    built: tuple[bytes, str, dict[str, np.ndarray]], header_length: str
) -> None:
    # str.isdigit() holds for '²' and '٣'; int() refuses the first and reads the second as 3.
    body, _, _ = built
    if header_length.isascii():
        return
    refuses(lambda: v2_codec.parse_request(body, header_length))


@FUZZ
@given(st.sampled_from(NUMERIC), st.binary(max_size=64), st.lists(st.integers(0, 9), max_size=3))
def test_binary_extension_raw_of_any_length_is_refused_or_exact(
    datatype: str, raw: bytes, shape: list[int]
) -> None:
    # BYTES elements declare their own lengths: arbitrary raw bytes must not decode silently wrong.
    for declared in (datatype, "BYTES"):
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": declared,
                        "shape": shape,
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ]
            }
        )
        parsed = decoded_or_refused(partial(v2_codec.parse_request, header + raw, str(len(header))))
        if parsed is not None:
            array = parsed.inputs["x"]
            assert array.shape == tuple(shape)
            if declared != "BYTES":
                assert array.nbytes == len(raw)
                assert array.tobytes() == raw


# ---- malformed, huge, deeply nested, non-finite, wrong-dtype and ragged data ----


NON_FINITE = ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e999", "-1e400", "1e309"]


@FUZZ
@given(st.sampled_from(NON_FINITE), st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=6), st.data())
def test_nan_and_infinity_are_refused(token: str, values: list[float], data: st.DataObject) -> None:
    numbers = [repr(v) for v in values]
    numbers.insert(data.draw(st.integers(0, len(numbers))), token)
    flat = ("[" + ",".join(numbers) + "]").encode()
    v2 = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[%d],"data":%s}]}' % (len(numbers), flat)
    refuses(lambda: v2_codec.parse_request(v2, None))
    refuses(lambda: v1_codec.parse_request(b'{"instances":%s}' % flat, SINGLE))
    refuses(lambda: v1_codec.parse_request(b'{"inputs":{"x":[%s]}}' % flat, SINGLE))


@settings(FUZZ, max_examples=60)
@given(
    st.integers(MAX_RANK + 1, 1100),
    st.sampled_from(DATATYPES),
    st.sampled_from(["1", '"a"', '{"b64":"YQ=="}', "true", "[]"]),
)
def test_deeply_nested_data_is_refused(depth: int, datatype: str, leaf: str) -> None:
    # orjson parses up to 1024 levels: below that the decoders' own depth bound must hold (a
    # recursive walk would raise RecursionError, a 500), above it the JSON error.
    nested = ("[" * depth + leaf + "]" * depth).encode()
    v2 = b'{"inputs":[{"name":"x","datatype":"%s","shape":[1],"data":%s}]}' % (datatype.encode(), nested)
    refuses(lambda: v2_codec.parse_request(v2, None))
    served = BYTES_SINGLE if datatype == "BYTES" else SINGLE
    refuses(lambda: v1_codec.parse_request(b'{"instances":%s}' % nested, served))
    refuses(lambda: v1_codec.parse_request(b'{"inputs":%s}' % nested, served))


@pytest.mark.parametrize("datatype", DATATYPES)
def test_nesting_up_to_the_bound_is_accepted(datatype: str) -> None:
    leaf: Any = {"BYTES": "a", "BOOL": True}.get(datatype, 1)
    for _ in range(MAX_RANK):
        leaf = [leaf]
    assert to_array("x", datatype, leaf).shape == (1,) * MAX_RANK
    refuses(lambda: to_array("x", datatype, [leaf]))


@settings(FUZZ, max_examples=12)
@given(st.integers(50_000, 250_000), st.sampled_from(["FP32", "INT64", "BYTES"]), st.booleans())
def test_huge_tensors_decode_exactly(count: int, datatype: str, binary: bool) -> None:
    rng = np.random.default_rng(count)
    if datatype == "BYTES":
        array = np.empty(count, dtype=np.object_)
        array[:] = [b"v%d" % i for i in range(count)]
        data: Any = [e.decode() for e in array]
    else:
        array = rng.integers(-(2**31), 2**31, count).astype(datatypes.to_numpy(datatype))
        data = array.tolist()
    shape = [count // 50, 50] if count % 50 == 0 else [count]
    expected = array.reshape(shape)
    if binary:
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": datatype,
                        "shape": shape,
                        "parameters": {"binary_data_size": len(raw_bytes(array))},
                    }
                ]
            }
        )
        parsed = v2_codec.parse_request(header + raw_bytes(array), str(len(header)))
    else:
        body = orjson.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]})
        parsed = v2_codec.parse_request(body, None)
    assert_same(parsed.inputs["x"], expected)


@FUZZ
@given(
    st.lists(st.integers(0, 2**64 - 1) | st.integers(-(2**63), -1), min_size=1, max_size=40),
    st.sampled_from(DATATYPES),
    st.integers(0, 4),
)
def test_huge_or_impossible_shapes_are_refused_or_exact(shape: list[int], datatype: str, size: int) -> None:
    leaf: Any = "a" if datatype == "BYTES" else 0
    for binary in (False, True):
        item: dict[str, Any] = {"name": "x", "datatype": datatype, "shape": shape}
        if binary:
            item["parameters"] = {"binary_data_size": 0}
        else:
            item["data"] = [leaf] * size
        body = orjson.dumps({"inputs": [item]})
        parsed = decoded_or_refused(partial(v2_codec.parse_request, body, str(len(body)) if binary else None))
        if parsed is not None:
            assert parsed.inputs["x"].shape == tuple(shape)


@FUZZ
@given(st.data())
def test_wrong_dtypes_are_refused(data: st.DataObject) -> None:
    datatype = data.draw(st.sampled_from(DATATYPES))
    kind = datatypes.to_numpy(datatype).kind
    text = st.text(st.characters(codec="utf-8"), max_size=4)
    finite = st.floats(allow_nan=False, allow_infinity=False)
    wrong: list[st.SearchStrategy[Any]] = [
        text,
        st.dictionaries(text, st.integers(-100, 100), min_size=1, max_size=2),
    ]
    if kind in "iu":  # booleans, fractions, and integers out of range
        info = np.iinfo(datatypes.to_numpy(datatype))
        wrong += [st.booleans(), finite.filter(lambda f: not f.is_integer())]
        if info.min > -(2**63):
            wrong.append(st.integers(-(2**63), int(info.min) - 1))
        if info.max < 2**64 - 1:
            wrong.append(st.integers(int(info.max) + 1, 2**64 - 1))
    elif kind == "b":  # numbers
        wrong += [st.integers(-(2**63), 2**63), finite]
    elif kind == "O":  # anything but strings and {"b64": "..."}
        wrong = [
            st.integers(-(2**63), 2**63),
            st.floats(allow_nan=False),
            st.booleans(),
            st.none(),
            st.dictionaries(st.sampled_from(["b64", "x"]), st.integers(-100, 100), min_size=1, max_size=2),
        ]
    else:  # floats: null and booleans
        wrong += [st.none(), st.booleans()]
    values = data.draw(st.lists(st.one_of(wrong), min_size=1, max_size=5))
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": [len(values)], "data": values}]}
    )
    refuses(lambda: v2_codec.parse_request(body, None))


@FUZZ
@given(
    st.lists(
        st.lists(st.integers(-100, 100), min_size=1, max_size=4) | st.integers(-100, 100),
        min_size=2,
        max_size=5,
    ).filter(lambda rows: len({len(r) if isinstance(r, list) else -1 for r in rows}) > 1),
    st.sampled_from(DATATYPES),
)
def test_ragged_data_is_refused(rows: list[Any], datatype: str) -> None:
    if datatype == "BYTES":
        rows = [[str(v) for v in r] if isinstance(r, list) else str(r) for r in rows]
    elif datatype == "BOOL":
        rows = [[v > 0 for v in r] if isinstance(r, list) else r > 0 for r in rows]
    else:
        rows = [[abs(v) for v in r] if isinstance(r, list) else abs(r) for r in rows]
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": [len(rows), 4], "data": rows}]}
    )
    assert "ragged" in refuses(lambda: v2_codec.parse_request(body, None))
    assert "ragged" in refuses(lambda: to_array("x", datatype, rows))


@settings(FUZZ, max_examples=30)
@given(st.sampled_from(["FP16", "FP32"]), st.floats(min_value=7e4, max_value=1e308), st.booleans())
def test_finite_json_beyond_a_float_type_is_refused_or_infinite(
    datatype: str, value: float, negative: bool
) -> None:
    """Documents today's behaviour: no 500; the value becomes +-inf (JSON ``null`` in answers).

    (Integers out of range are refused; refusing floats likewise would be stricter.)
    """
    value = -value if negative else value
    with np.errstate(over="ignore"):
        if np.isfinite(np.asarray(value).astype(datatypes.to_numpy(datatype))):
            return
        array = decoded_or_refused(lambda: to_array("x", datatype, [value]))
    assert array is None or (np.isinf(array[0]) and np.signbit(array[0]) == negative)


# ---- v1 (TF-Serving) ----


def _served(*inputs: tuple[str, str, tuple[int, ...]], max_batch_size: int = 8) -> ServedVersion:
    specs = tuple(TensorSpec(name, datatype, shape) for name, datatype, shape in inputs)
    signature = Signature(specs, (TensorSpec("y", "FP32", (-1, 2)),))
    return ServedVersion("m", "1", signature, max_batch_size)


SINGLE = _served(("x", "FP32", (-1, 2)))
BYTES_SINGLE = _served(("s", "BYTES", (-1,)))
MULTI = _served(("a", "INT64", (-1, 3)), ("b", "BYTES", (-1,)))
NO_BATCH = _served(("x", "FP32", (2,)), max_batch_size=0)
V1_MODELS = (SINGLE, BYTES_SINGLE, MULTI, NO_BATCH)


@FUZZ
@given(st.data())
def test_v1_rows_and_columns_decode_to_what_was_sent(data: st.DataObject) -> None:
    rows = data.draw(st.integers(1, 5))
    x = data.draw(hnp.arrays(np.float32, (rows, 2), elements=_elements("FP32")))
    instances = v1_codec.parse_request(orjson.dumps({"instances": x.tolist()}), SINGLE)
    assert instances.rows
    assert_same(instances.inputs["x"], x)
    for columns in ({"inputs": x.tolist()}, {"inputs": {"x": x.tolist()}}):
        parsed = v1_codec.parse_request(orjson.dumps(columns), SINGLE)
        assert not parsed.rows
        assert_same(parsed.inputs["x"], x)
    # Several inputs: one object per row, or one list per input.
    a = data.draw(hnp.arrays(np.int64, (rows, 3)))
    b, b_json = data.draw(bytes_tensors((rows,)))
    objects = [{"a": a[i].tolist(), "b": b_json[i]} for i in range(rows)]
    for body in ({"instances": objects}, {"inputs": {"a": a.tolist(), "b": b_json}}):
        parsed = v1_codec.parse_request(orjson.dumps(body), MULTI)
        assert_same(parsed.inputs["a"], a)
        assert_same(parsed.inputs["b"], b)
    # One BYTES input: rows are strings or TF-Serving's {"b64": ...} objects.
    parsed = v1_codec.parse_request(orjson.dumps({"instances": b_json}), BYTES_SINGLE)
    assert_same(parsed.inputs["s"], b)


def test_v1_b64_rows_of_a_single_bytes_input_are_values() -> None:
    body = orjson.dumps({"instances": [{"b64": base64.b64encode(b"\x00\xff").decode()}, "text"]})
    assert v1_codec.parse_request(body, BYTES_SINGLE).inputs["s"].tolist() == [b"\x00\xff", b"text"]


def test_uint64_values_past_int64_decode_exactly() -> None:
    # numpy infers float64 for [2**63, 0]: found by test_v2_json_decodes_to_what_was_sent.
    assert to_array("x", "UINT64", [2**63, 0]).tolist() == [2**63, 0]
    assert to_array("x", "UINT64", [[2**64 - 1, 1]]).tolist() == [[2**64 - 1, 1]]
    for bad in ([2**64, 0], [-1, 2**63]):
        with pytest.raises(MdeployError, match="out of range for UINT64"):
            to_array("x", "UINT64", bad)
    with pytest.raises(MdeployError, match="must be non-negative integers"):
        to_array("x", "UINT64", [1.5, 2**63])
    with pytest.raises(MdeployError, match="out of range for INT64"):
        to_array("x", "INT64", [2**63, 0])


def _v1_examples() -> st.SearchStrategy[dict[str, Any]]:
    row = st.lists(st.floats(-10, 10), min_size=2, max_size=2)
    multi_row = st.fixed_dictionaries(
        {"a": st.lists(st.integers(-5, 5), min_size=3, max_size=3), "b": st.text(max_size=3)}
    )
    return st.one_of(
        st.fixed_dictionaries({"instances": st.lists(row, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"inputs": st.lists(row, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"instances": st.lists(multi_row, min_size=1, max_size=3)}),
        st.fixed_dictionaries(
            {
                "inputs": st.fixed_dictionaries(
                    {
                        "a": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
                        "b": st.lists(st.text(max_size=3), max_size=3),
                    }
                )
            }
        ),
    )


@settings(FUZZ, max_examples=400)
@given(st.data())
def test_v1_mutated_is_refused_or_consistent(data: st.DataObject) -> None:
    served = data.draw(st.sampled_from(V1_MODELS))
    document = data.draw(mutated(data.draw(_v1_examples())))
    parsed = decoded_or_refused(lambda: v1_codec.parse_request(orjson.dumps(document), served))
    if parsed is None:
        return
    specs = {spec.name: spec for spec in served.signature.inputs}
    assert parsed.inputs.keys() <= specs.keys()
    for name, array in parsed.inputs.items():
        assert array.dtype == datatypes.to_numpy(specs[name].datatype)
    if parsed.rows:
        assert served.max_batch_size > 0
        assert len({len(array) for array in parsed.inputs.values()}) == 1


@FUZZ
@given(st.binary(max_size=256), st.sampled_from(V1_MODELS))
def test_v1_arbitrary_bytes_are_refused_or_decoded(body: bytes, served: ServedVersion) -> None:
    decoded_or_refused(lambda: v1_codec.parse_request(body, served))


def test_only_the_classification_extension_is_a_5xx() -> None:
    body = orjson.dumps(
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
            "outputs": [{"name": "y", "parameters": {"classification": 2}}],
        }
    )
    with pytest.raises(Unsupported):
        v2_codec.parse_request(body, None)
