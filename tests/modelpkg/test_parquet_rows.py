"""Reference rows from Parquet: a plain numeric table, or the input columns of an exported log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import InvalidInput
from modelpkg.inputs import load_samples
from modelpkg.parquet_rows import SHAPES_KEY


def test_numeric_columns_are_one_input_with_features_in_column_order(tmp_path: Path) -> None:
    pq.write_table(pa.table({"b": [1.0, 2.0, 3.0], "a": [4, 5, 6]}), tmp_path / "t.parquet")
    rows = load_samples(tmp_path / "t.parquet", 2)
    assert list(rows) == [""]
    np.testing.assert_array_equal(rows[""], [[1.0, 4.0], [2.0, 5.0]])


def test_logged_input_columns_keep_their_row_shapes(tmp_path: Path) -> None:
    images = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
    table = pa.table(
        {
            "request_id": ["a", "b", "c"],
            "input.image": [row.ravel().tolist() for row in images],
            "input.scale": [1.0, 2.0, 3.0],
            "output.label": [0, 1, 0],
        }
    ).replace_schema_metadata({SHAPES_KEY: json.dumps({"input.image": [2, 2], "input.scale": []})})
    pq.write_table(table, tmp_path / "log.parquet")
    rows = load_samples(tmp_path / "log.parquet", 10)
    assert sorted(rows) == ["image", "scale"]
    np.testing.assert_array_equal(rows["image"], images)
    np.testing.assert_array_equal(rows["scale"], [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ("columns", "says"),
    [
        ({"name": ["a", "b"], "x": [1.0, 2.0]}, "either numeric columns"),
        ({"x": [1.0, None]}, "missing values"),
    ],
)
def test_a_table_that_is_not_rows_says_what_it_should_be(
    tmp_path: Path, columns: dict[str, list[object]], says: str
) -> None:
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    with pytest.raises(InvalidInput, match=says):
        load_samples(tmp_path / "t.parquet", 10)


def test_a_file_that_is_not_parquet_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidInput, match="cannot read Parquet rows"):
        load_samples(tmp_path / "t.parquet", 10)
