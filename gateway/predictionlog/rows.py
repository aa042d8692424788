"""The prediction log's tables: one row per input row of an answered request, and rewards.

A predictions table has, in order:

- ``request_id`` (string), ``row`` (int32: the row's index within its request), ``timestamp``
  (timestamp[us, UTC]: when the gateway answered), ``model`` and ``version`` (strings);
- ``input.<name>`` for each input tensor, then ``output.<name>`` for each output the request
  asked for: that row's values as nested lists, one level per dimension after the batch axis (a
  plain value when there is none), of the tensor's type. BYTES values become UTF-8 strings, with
  bytes that are not UTF-8 escaped by backslashes.

The schema metadata ``mdeploy.shapes`` (JSON: column name → row shape, -1 where rows differ)
says how to rebuild arrays. A rewards table has ``request_id``, ``timestamp`` (when the
feedback arrived), ``model``, ``version`` and ``reward`` (float64). An export adds ``reward`` and
``rewarded_at`` after ``version``: the latest reward of the row's request, null when none came.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelpkg.parquet_rows import INPUT_PREFIX, SHAPES_KEY

TIMESTAMP = pa.timestamp("us", tz="UTC")
OUTPUT_PREFIX = "output."
_MAX_OFFSET = 2**31 - 1  # list offsets are int32

Shape = list[int] | None
"""A column's row shape (-1 where rows differ); None when rows differ in rank."""


@dataclass(slots=True)
class Answered:
    """One answered request, as the request path keeps it (arrays are not copied)."""

    model: str
    version: str
    request_id: str
    at: float
    """Seconds since the epoch."""
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    batched: bool
    """False for a model without batching: its arrays have no batch axis (one row)."""
    size: int = 0
    """Bytes its arrays hold (what it counts against the queue's bound)."""

    def columns(self) -> dict[str, np.ndarray]:
        """The tensor columns' arrays, each with its batch axis first."""
        arrays = {INPUT_PREFIX + name: np.asarray(a) for name, a in self.inputs.items()}
        arrays.update((OUTPUT_PREFIX + name, np.asarray(a)) for name, a in self.outputs.items())
        if not self.batched:
            return {name: a[np.newaxis] for name, a in arrays.items()}
        return {name: a for name, a in arrays.items() if a.ndim >= 1}


@dataclass(slots=True)
class Reward:
    """A reward that feedback gave a request."""

    model: str
    version: str
    request_id: str
    reward: float
    at: float


def prediction_table(answered: Sequence[Answered]) -> pa.Table | None:
    """The rows of ``answered`` (requests without rows are left out); None when there are none."""
    groups: dict[tuple[tuple[str, str, tuple[int, ...]], ...], list[tuple[Answered, dict[str, np.ndarray]]]]
    groups = {}
    for record in answered:
        arrays = _rows_of(record.columns())
        if arrays:
            key = tuple((name, a.dtype.str, a.shape[1:]) for name, a in arrays.items())
            groups.setdefault(key, []).append((record, arrays))
    if not groups:
        return None
    tables = [_group_table(items) for items in groups.values()]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    shapes = merged_shapes(
        {name: list(shape) for name, _, shape in key if name.startswith((INPUT_PREFIX, OUTPUT_PREFIX))}
        for key in groups
    )
    return with_shapes(table, shapes)


def reward_table(rewards: Sequence[Reward]) -> pa.Table:
    return pa.table(
        {
            "request_id": pa.array([r.request_id for r in rewards], pa.string()),
            "timestamp": _timestamps(np.array([r.at for r in rewards], dtype=np.float64)),
            "model": pa.array([r.model for r in rewards], pa.string()),
            "version": pa.array([r.version for r in rewards], pa.string()),
            "reward": pa.array([r.reward for r in rewards], pa.float64()),
        }
    )


def shapes_of(schema: pa.Schema) -> dict[str, Shape]:
    """The ``mdeploy.shapes`` metadata of a predictions table's schema ({} without it)."""
    raw = (schema.metadata or {}).get(SHAPES_KEY)
    if raw is None:
        return {}
    shapes = json.loads(raw)
    return shapes if isinstance(shapes, dict) else {}


def merged_shapes(parts: Iterable[Mapping[str, Shape]]) -> dict[str, Shape]:
    """Row shapes of several tables: a dimension that differs becomes -1; a rank that differs, None."""
    merged: dict[str, Shape] = {}
    for shapes in parts:
        for name, shape in shapes.items():
            if name not in merged:
                merged[name] = shape
                continue
            known = merged[name]
            if known is None or shape is None or len(known) != len(shape):
                merged[name] = None
            else:
                merged[name] = [a if a == b else -1 for a, b in zip(known, shape, strict=True)]
    return merged


def with_shapes(table: pa.Table, shapes: Mapping[str, Shape]) -> pa.Table:
    metadata = dict(table.schema.metadata or {})
    metadata[SHAPES_KEY] = json.dumps(dict(shapes), sort_keys=True).encode()
    return table.replace_schema_metadata(metadata)


def join_rewards(predictions: pa.Table, rewards: pa.Table) -> pa.Table:
    """``predictions`` with ``reward`` and ``rewarded_at`` after ``version``: each row's request's
    latest reward in ``rewards`` (null when it has none)."""
    if rewards.num_rows:
        rewards = rewards.take(pc.sort_indices(rewards, sort_keys=[("timestamp", "ascending")]))
        latest_of = {request_id: i for i, request_id in enumerate(rewards["request_id"].to_pylist())}
        latest = rewards.take(pa.array(list(latest_of.values()), pa.int64()))
        index = pc.index_in(predictions["request_id"], value_set=latest["request_id"].combine_chunks())
        reward = latest["reward"].take(index)
        rewarded_at = latest["timestamp"].take(index)
    else:
        reward = pa.nulls(predictions.num_rows, pa.float64())
        rewarded_at = pa.nulls(predictions.num_rows, TIMESTAMP)
    place = predictions.schema.get_field_index("version") + 1
    joined = predictions.add_column(place, pa.field("reward", pa.float64()), reward)
    return joined.add_column(place + 1, pa.field("rewarded_at", TIMESTAMP), rewarded_at)


def _rows_of(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays with as many rows as the first (an array of another length cannot be split)."""
    if not arrays:
        return {}
    rows = next(iter(arrays.values())).shape[0]
    if rows == 0:
        return {}
    return {name: a for name, a in arrays.items() if a.shape[0] == rows}


def _group_table(items: list[tuple[Answered, dict[str, np.ndarray]]]) -> pa.Table:
    """One table of requests whose tensors have the same names, types and row shapes."""
    counts = np.array([next(iter(arrays.values())).shape[0] for _, arrays in items], dtype=np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    columns: dict[str, pa.Array] = {
        "request_id": _strings([record.request_id for record, _ in items], counts),
        "row": pa.array((np.arange(int(counts.sum())) - starts).astype(np.int32)),
        "timestamp": _timestamps(np.repeat(np.array([r.at for r, _ in items], dtype=np.float64), counts)),
        "model": _strings([record.model for record, _ in items], counts),
        "version": _strings([record.version for record, _ in items], counts),
    }
    for name in items[0][1]:
        columns[name] = tensor_column(np.concatenate([arrays[name] for _, arrays in items]))
    return pa.table(columns)


def _strings(values: list[str], counts: np.ndarray) -> pa.Array:
    return pa.array(np.repeat(np.array(values, dtype=object), counts), pa.string())


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array(np.round(seconds * 1e6).astype(np.int64), pa.int64()).cast(TIMESTAMP)


def tensor_column(array: np.ndarray) -> pa.Array:
    """Each row of ``array`` (batch axis first) as nested lists of its values."""
    if array.dtype == np.object_:
        column: pa.Array = pa.array([_text(value) for value in array.reshape(-1)], pa.string())
    else:
        column = pa.array(np.ascontiguousarray(array).reshape(-1))
    for axis in range(array.ndim - 1, 0, -1):
        lists = int(np.prod(array.shape[:axis]))
        if lists * array.shape[axis] > _MAX_OFFSET:
            raise ValueError(f"a tensor of shape {array.shape} is too large for one log file")
        offsets = np.arange(lists + 1, dtype=np.int64) * array.shape[axis]
        column = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), column)
    return column


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)
