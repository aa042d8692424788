"""The prediction log's data path: what a flush writes, sampling, and every way rows are dropped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.predictionlog.folder import FOLDER_NAME, PREDICTIONS, REWARDS
from gateway.predictionlog.log import PredictionLog
from gateway.predictionlog.rows import TIMESTAMP, Answered, prediction_table
from modelpkg.inputs import load_samples
from tests.predictionlog.support import MODEL, SERVED, Counted, config, logging_log, request


@pytest.fixture
def counted() -> Counted:
    return Counted()


@pytest.fixture
def log(tmp_path: Path, counted: Counted) -> PredictionLog:
    return logging_log(tmp_path / FOLDER_NAME, counted)


def only_file(log: PredictionLog, kind: str = PREDICTIONS) -> pa.Table:
    files = log.folder.files(MODEL, kind)
    assert len(files) == 1, files
    return pq.read_table(files[0].path)


def test_a_flush_writes_one_parquet_file_with_a_row_per_input_row(
    log: PredictionLog, counted: Counted
) -> None:
    first, second = request(2, seed=1), request(1, seed=2)
    before = time.time()
    log.observe(SERVED, *first, "req-1")
    log.observe(SERVED, *second, "req-2")
    log.flush()
    table = only_file(log)
    assert table.column_names == [
        "request_id",
        "row",
        "timestamp",
        "model",
        "version",
        "input.x",
        "input.note",
        "output.label",
        "output.scores",
    ]
    schema = table.schema
    assert schema.field("row").type == pa.int32()
    assert schema.field("timestamp").type == TIMESTAMP
    assert schema.field("input.x").type == pa.list_(pa.float32())
    assert schema.field("input.note").type == pa.string()
    assert schema.field("output.label").type == pa.int64()
    assert table["request_id"].to_pylist() == ["req-1", "req-1", "req-2"]
    assert table["row"].to_pylist() == [0, 1, 0]
    assert set(table["model"].to_pylist()) == {MODEL}
    assert set(table["version"].to_pylist()) == {"1"}
    x = np.array(table["input.x"].to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(x, np.concatenate([first[0]["x"], second[0]["x"]]))
    assert table["input.note"].to_pylist() == ["row 0", "row 1", "row 0"]
    assert table["output.label"].to_pylist() == [*first[1]["label"], *second[1]["label"]]
    stamps = [t.timestamp() for t in table["timestamp"].to_pylist()]
    assert all(before <= t <= time.time() for t in stamps)
    shapes = json.loads(schema.metadata[b"mdeploy.shapes"])
    assert shapes == {"input.x": [4], "input.note": [], "output.label": [], "output.scores": [3]}
    assert counted.written == {(MODEL, PREDICTIONS): 3}


def test_images_keep_their_shape_as_nested_lists_and_bytes_that_are_not_text_are_escaped(
    log: PredictionLog,
) -> None:
    images = np.arange(2 * 3 * 2, dtype=np.uint8).reshape(2, 3, 2)
    notes = np.array([b"ok", b"\xff\xfe"], dtype=object)
    log.observe(SERVED, {"image": images, "note": notes}, {"label": np.array([1, 2])}, "req")
    log.flush()
    table = only_file(log)
    assert table.schema.field("input.image").type == pa.list_(pa.list_(pa.uint8()))
    assert np.array(table["input.image"].to_pylist()).tolist() == images.tolist()
    assert table["input.note"].to_pylist() == ["ok", "\\xff\\xfe"]
    assert json.loads(table.schema.metadata[b"mdeploy.shapes"])["input.image"] == [3, 2]


def test_a_model_without_batching_logs_one_row_per_request(log: PredictionLog) -> None:
    unbatched = type(SERVED)(MODEL, "2", SERVED.signature, 0)
    log.observe(unbatched, {"x": np.ones(4, np.float32)}, {"label": np.array(2)}, "one")
    log.flush()
    table = only_file(log)
    assert table.to_pylist()[0] | {"timestamp": None} == {
        "request_id": "one",
        "row": 0,
        "timestamp": None,
        "model": MODEL,
        "version": "2",
        "input.x": [1.0, 1.0, 1.0, 1.0],
        "output.label": 2,
    }


def test_a_fraction_of_requests_is_logged_at_the_sample_rate(log: PredictionLog, counted: Counted) -> None:
    log.configure({MODEL: config(sample_rate=0.25)})
    inputs, outputs = request(1)
    for i in range(4000):
        log.observe(SERVED, inputs, outputs, f"req-{i}")
    other = type(SERVED)("not-logged", "1", SERVED.signature, 64)
    for i in range(100):
        log.observe(other, inputs, outputs, f"other-{i}")
    log.flush()
    logged = counted.written[(MODEL, PREDICTIONS)]
    assert 900 <= logged <= 1100, logged
    assert log.folder.files("not-logged") == []


def test_a_full_queue_drops_requests_and_counts_their_rows(tmp_path: Path, counted: Counted) -> None:
    log = logging_log(tmp_path, counted, max_queued=3)
    for i in range(5):
        log.observe(SERVED, *request(2), f"req-{i}")
    assert counted.dropped == {(MODEL, "queue_full"): 4}
    by_bytes = logging_log(tmp_path / "small", counted, max_queued_bytes=1000)
    by_bytes.observe(SERVED, *request(100), "big")
    assert counted.dropped[(MODEL, "queue_full")] == 104
    log.flush()
    assert counted.written == {(MODEL, PREDICTIONS): 6}


def test_a_folder_that_cannot_be_written_drops_and_counts_rows_without_raising(
    tmp_path: Path, counted: Counted
) -> None:
    root = tmp_path / FOLDER_NAME
    root.mkdir()
    (root / MODEL).write_text("a file where the model's folder should be")
    log = logging_log(root, counted)
    log.observe(SERVED, *request(3), "req")
    log.reward(MODEL, "1", "req", 1.0)
    log.flush()
    assert counted.dropped == {(MODEL, "write_error"): 3, (MODEL, "reward_write_error"): 1}
    assert counted.written == {}
    assert log.folder.stats(MODEL).files == 0


def test_a_file_larger_than_the_whole_cap_is_dropped_and_counted(
    log: PredictionLog, counted: Counted
) -> None:
    log.configure({MODEL: config(max_bytes=4096)})
    log.observe(SERVED, *request(1), "small")
    log.flush()
    log.observe(SERVED, *request(500), "huge")
    log.flush()
    assert counted.dropped == {(MODEL, "over_cap"): 500}
    assert counted.written == {(MODEL, PREDICTIONS): 1}
    assert only_file(log)["request_id"].to_pylist() == ["small"]


def test_a_model_turned_off_loses_what_it_had_queued(log: PredictionLog, counted: Counted) -> None:
    log.observe(SERVED, *request(2), "req")
    log.reward(MODEL, "1", "req", 0.5)
    log.configure({})
    log.observe(SERVED, *request(2), "after")
    log.flush()
    assert log.folder.files(MODEL) == []
    assert counted.written == {}


def test_rewards_are_written_as_their_own_files(log: PredictionLog, counted: Counted) -> None:
    log.reward(MODEL, "1", "req-1", 0.25)
    log.reward("not-logged", "1", "req-2", 1.0)
    log.flush()
    rewards = only_file(log, REWARDS)
    assert rewards.select(["request_id", "version", "reward"]).to_pylist() == [
        {"request_id": "req-1", "version": "1", "reward": 0.25}
    ]
    assert counted.written == {(MODEL, REWARDS): 1}


def test_the_writer_thread_writes_on_its_own_and_close_writes_the_rest(
    tmp_path: Path, counted: Counted
) -> None:
    log = logging_log(tmp_path, counted, flush_s=0.05)
    log.start()
    try:
        log.observe(SERVED, *request(1), "first")
        deadline = time.monotonic() + 10
        while not log.folder.files(MODEL) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(log.folder.files(MODEL)) == 1
    finally:
        log.observe(SERVED, *request(1), "last")
        log.close()
    assert counted.written == {(MODEL, PREDICTIONS): 2}


def test_an_exported_log_reads_back_as_reference_rows(tmp_path: Path) -> None:
    images = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    answered = [
        Answered("m", "1", f"r{i}", 1.0, {"image": images[2 * i : 2 * i + 2]}, {"p": np.ones((2, 1))}, True)
        for i in range(2)
    ]
    table = prediction_table(answered)
    assert table is not None
    pq.write_table(table, tmp_path / "log.parquet")
    rows = load_samples(tmp_path / "log.parquet", 100)
    assert list(rows) == ["image"]
    np.testing.assert_array_equal(rows["image"], images)
