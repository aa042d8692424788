"""A model's log folder: rotation under its cap, oldest first, stats, and reads of a time range."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import InvalidInput, PayloadTooLarge
from gateway.predictionlog.folder import PREDICTIONS, LogFolder
from gateway.predictionlog.rows import Answered, prediction_table
from tests.predictionlog.support import MODEL


def table_of(request_id: str, rows: int, at: float | None = None) -> pa.Table:
    noise = np.random.default_rng(len(request_id)).standard_normal((rows, 64)).astype(np.float32)
    answered = Answered(MODEL, "1", request_id, at or time.time(), {"x": noise}, {}, True)
    table = prediction_table([answered])
    assert table is not None
    return table


def test_rotation_keeps_the_folder_under_its_cap_and_deletes_the_oldest_first(tmp_path: Path) -> None:
    folder = LogFolder(tmp_path)
    cap = 60_000
    rotated = 0
    for i in range(12):
        written = folder.write(MODEL, PREDICTIONS, table_of(f"req-{i:02d}", 50), cap)
        assert written.fitted
        rotated += written.rotated
        assert sum(f.size for f in folder.files(MODEL)) <= cap
    kept = [pq.read_table(f.path)["request_id"][0].as_py() for f in folder.files(MODEL)]
    assert rotated == 12 - len(kept) > 0
    assert kept == [f"req-{i:02d}" for i in range(12 - len(kept), 12)]


def test_stats_count_files_bytes_rows_and_the_time_span(tmp_path: Path) -> None:
    folder = LogFolder(tmp_path)
    assert folder.stats(MODEL).files == 0
    folder.write(MODEL, PREDICTIONS, table_of("a", 3, at=1_700_000_000.0), 2**30)
    folder.write(MODEL, PREDICTIONS, table_of("b", 2, at=1_700_000_100.5), 2**30)
    stats = folder.stats(MODEL)
    assert (stats.files, stats.rows, stats.rewards) == (2, 5, 0)
    assert stats.bytes == sum(f.size for f in folder.files(MODEL))
    assert stats.oldest is not None
    assert stats.newest is not None
    assert (stats.oldest.timestamp(), stats.newest.timestamp()) == (1_700_000_000.0, 1_700_000_100.5)


def test_a_read_keeps_the_rows_of_its_time_range_and_refuses_too_many(tmp_path: Path) -> None:
    folder = LogFolder(tmp_path)
    for i, at in enumerate((1000.0, 2000.0, 3000.0)):
        folder.write(MODEL, PREDICTIONS, table_of(f"req-{i}", 2, at=at), 2**30)
    limits = {"max_rows": 100, "max_bytes": 2**30}
    middle = folder.read(MODEL, PREDICTIONS, 1500.0, 3000.0, **limits)
    assert middle is not None
    assert middle["request_id"].to_pylist() == ["req-1", "req-1"]
    assert folder.read(MODEL, PREDICTIONS, 4000.0, 5000.0, **limits) is None
    with pytest.raises(PayloadTooLarge, match="more than 3 rows"):
        folder.read(MODEL, PREDICTIONS, 0.0, 5000.0, max_rows=3, max_bytes=2**30)


def test_a_purge_deletes_the_models_files(tmp_path: Path) -> None:
    folder = LogFolder(tmp_path)
    folder.write(MODEL, PREDICTIONS, table_of("a", 1), 2**30)
    folder.purge(MODEL)
    assert not (tmp_path / MODEL).exists()
    assert folder.stats(MODEL).files == 0


def test_a_name_that_is_not_a_model_name_never_becomes_a_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        LogFolder(tmp_path).folder("../escape")
