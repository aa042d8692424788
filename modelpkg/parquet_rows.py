"""Rows from a Parquet table: reference rows (``--reference train.parquet``), and the tables that
prediction logs export.

Two layouts are read:

* an exported prediction log: a column ``input.<name>`` per model input, each row holding that
  row's values as a (nested) list; the schema metadata ``mdeploy.shapes`` (JSON: column → row
  shape) restores the arrays' shapes. Other columns (outputs, ids, rewards) are left out.
* a plain table of numeric columns: one 2-D input, its features in column order (the common
  case of tabular training data for a single-input model).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.errors import InvalidInput

SHAPES_KEY = b"mdeploy.shapes"
"""Schema metadata of a logged table: JSON, column name → the shape of one row (-1: varies)."""
INPUT_PREFIX = "input."


def read_parquet_rows(path: Path, rows: int) -> dict[str, np.ndarray] | np.ndarray:
    """The first ``rows`` rows of ``path``: arrays by input name, or one array (a plain table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path).slice(0, rows)
    except (OSError, pa.ArrowException) as error:
        raise InvalidInput(f"cannot read Parquet rows from {path}: {error}") from None
    logged = [name for name in table.column_names if name.startswith(INPUT_PREFIX)]
    if logged:
        shapes = json.loads((table.schema.metadata or {}).get(SHAPES_KEY, b"{}"))
        return {
            name.removeprefix(INPUT_PREFIX): _column(table.column(name), name, shapes.get(name))
            for name in logged
        }
    columns = {name: table.column(name) for name in table.column_names}
    if not columns:
        raise InvalidInput(f"{path} has no columns")
    plain = {name: _column(column, name, None) for name, column in columns.items()}
    if any(array.ndim != 1 or array.dtype.kind not in "biuf" for array in plain.values()):
        raise InvalidInput(
            f"{path}: a Parquet table of rows is either numeric columns (one feature each) or "
            f"'{INPUT_PREFIX}<name>' columns per model input, as `mdeploy logs export` writes"
        )
    return np.stack(list(plain.values()), axis=1)


def _column(column: object, name: str, shape: list[int] | None) -> np.ndarray:
    import pyarrow as pa

    assert isinstance(column, pa.ChunkedArray)
    if column.null_count:
        raise InvalidInput(f"column {name!r} has {column.null_count} missing values; rows need every value")
    values = (
        column.to_pylist() if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) else None
    )
    if values is None:
        return np.asarray(column.to_numpy(zero_copy_only=False))
    try:
        array = np.asarray(values)
    except ValueError:
        raise InvalidInput(f"column {name!r}: rows of different shapes cannot form one array") from None
    if shape and -1 not in shape and array.size == array.shape[0] * int(np.prod(shape)):
        array = array.reshape((array.shape[0], *shape))
    return array
