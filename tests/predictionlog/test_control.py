"""Turning a model's log on, changing it and off (audited, in the database), stats, and the export."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.errors import InvalidInput, NotFound, PayloadTooLarge
from gateway.database.engine import SQLiteDatabase
from gateway.db import open_database
from gateway.predictionlog.control import PredictionLogs
from gateway.predictionlog.folder import FOLDER_NAME, LogFolder
from gateway.predictionlog.log import PredictionLog
from gateway.registry import audit
from tests.predictionlog.support import MODEL, SERVED, request

ACTOR = "key:abc"


async def known_model(name: str) -> None:
    if name != MODEL:
        raise NotFound(f"model '{name}' is not in the registry")


def logs_in(data: Path, *, max_export_rows: int = 10_000) -> PredictionLogs:
    """Prediction logs on ``data``'s database, as a gateway process there would have them."""
    return PredictionLogs(
        SQLiteDatabase.open(open_database(data / "registry.sqlite3")),
        PredictionLog(LogFolder(data / FOLDER_NAME), seed=0),
        check_model=known_model,
        refresh_s=3600,
        max_export_rows=max_export_rows,
        max_export_bytes=2**30,
    )


@pytest.fixture
async def logs(tmp_path: Path) -> AsyncIterator[PredictionLogs]:
    started = logs_in(tmp_path)
    await started.start()
    yield started
    await started.close()


def audited(data: Path) -> list[tuple[str, str | None, str | None]]:
    """The audit events of ``MODEL`` in ``data``'s database, oldest first."""
    connection = open_database(data / "registry.sqlite3")
    try:
        events = audit.events(connection, model=MODEL)
    finally:
        connection.close()
    return [(e.action, e.from_value, e.to_value) for e in reversed(events)]


async def test_enabling_changing_and_disabling_are_each_audited(logs: PredictionLogs, tmp_path: Path) -> None:
    status = await logs.enable(MODEL, None, None, ACTOR)
    assert (status.enabled, status.sample_rate, status.max_mb, status.updated_by) == (True, 1.0, 1024, ACTOR)
    changed = await logs.enable(MODEL, 0.5, None, ACTOR)
    assert (changed.sample_rate, changed.max_mb) == (0.5, 1024)
    await logs.enable(MODEL, 0.5, None, ACTOR)  # no change, no event
    off = await logs.disable(MODEL, False, ACTOR)
    assert (off.enabled, off.sample_rate) == (False, None)
    assert audited(tmp_path) == [
        ("logs-enable", None, "sample 1, cap 1024 MiB"),
        ("logs-change", "sample 1, cap 1024 MiB", "sample 0.5, cap 1024 MiB"),
        ("logs-disable", "sample 0.5, cap 1024 MiB", "off"),
    ]


async def test_another_process_on_the_data_folder_sees_the_setting(
    logs: PredictionLogs, tmp_path: Path
) -> None:
    other = logs_in(tmp_path)
    await other.refresh()
    other.log.observe(SERVED, *request(1), "before")
    await logs.enable(MODEL, 1.0, 2, ACTOR)
    await other.refresh()
    other.log.observe(SERVED, *request(1), "after")
    other.log.flush()
    exported = await logs.export(MODEL, 60)
    assert pq.read_table(io.BytesIO(exported.data))["request_id"].to_pylist() == ["after"]


async def test_settings_out_of_bounds_and_unknown_models_are_refused(logs: PredictionLogs) -> None:
    with pytest.raises(InvalidInput, match="sample_rate must be more than 0 and at most 1"):
        await logs.enable(MODEL, 0.0, None, ACTOR)
    with pytest.raises(InvalidInput, match="max_mb must be a whole number of MiB from 1 to 102400"):
        await logs.enable(MODEL, None, 0, ACTOR)
    with pytest.raises(NotFound):
        await logs.enable("other", None, None, ACTOR)
    with pytest.raises(NotFound):
        await logs.export("other", 60)
    with pytest.raises(InvalidInput, match="since must be"):
        await logs.export(MODEL, -1)
    with pytest.raises(InvalidInput, match="until must be"):
        await logs.export(MODEL, 60, 120)


async def test_the_export_has_the_logged_rows_with_the_latest_reward_of_each_request(
    logs: PredictionLogs,
) -> None:
    await logs.enable(MODEL, 1.0, 16, ACTOR)
    logs.log.observe(SERVED, *request(2), "rewarded")
    logs.log.observe(SERVED, *request(1), "not-rewarded")
    logs.log.flush()
    logs.reward(MODEL, "1", "rewarded", 0.2)
    logs.reward(MODEL, "1", "rewarded", 0.9)
    logs.reward(MODEL, "1", "never-logged", 1.0)
    logs.log.observe(SERVED, *request(1), "still-queued")  # the export writes the queue first
    exported = await logs.export(MODEL, 3600)
    assert (exported.rows, exported.rewarded) == (4, 2)
    table = pq.read_table(io.BytesIO(exported.data))
    assert table.column_names[:7] == [
        "request_id",
        "row",
        "timestamp",
        "model",
        "version",
        "reward",
        "rewarded_at",
    ]
    rows = {
        (r["request_id"], r["row"]): r["reward"]
        for r in table.select(["request_id", "row", "reward"]).to_pylist()
    }
    assert rows == {
        ("rewarded", 0): 0.9,
        ("rewarded", 1): 0.9,
        ("not-rewarded", 0): None,
        ("still-queued", 0): None,
    }
    assert b"mdeploy.shapes" in table.schema.metadata
    status = await logs.status(MODEL)
    assert (status.rows, status.rewards) == (4, 3)


async def test_an_export_of_nothing_is_an_empty_table(logs: PredictionLogs) -> None:
    exported = await logs.export(MODEL, 60)
    assert exported.rows == 0
    assert pq.read_table(io.BytesIO(exported.data)).num_rows == 0


async def test_an_export_past_its_limit_is_refused_with_what_to_narrow(tmp_path: Path) -> None:
    logs = logs_in(tmp_path, max_export_rows=2)
    await logs.start()
    try:
        await logs.enable(MODEL, None, None, ACTOR)
        logs.log.observe(SERVED, *request(3), "three-rows")
        with pytest.raises(PayloadTooLarge, match=r"more than 2 rows.*shorter time"):
            await logs.export(MODEL, 3600)
    finally:
        await logs.close()


async def test_disabling_with_purge_deletes_the_files_and_is_audited(
    logs: PredictionLogs, tmp_path: Path
) -> None:
    await logs.enable(MODEL, None, None, ACTOR)
    logs.log.observe(SERVED, *request(1), "req")
    logs.log.flush()
    assert (await logs.status(MODEL)).files == 1
    status = await logs.disable(MODEL, True, ACTOR)
    assert (status.enabled, status.files, status.rows) == (False, 0, 0)
    assert audited(tmp_path)[-1] == ("logs-disable", "sample 1, cap 1024 MiB", "off")
    await logs.disable(MODEL, True, ACTOR)
    assert audited(tmp_path)[-1][0] == "logs-purge"
