"""Which models keep a prediction log, with what sample rate and cap: one table in the gateway's
database, so that every gateway process on the data folder logs the same models."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from gateway.db import ensure_schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS prediction_logs (
    model TEXT PRIMARY KEY,
    sample_rate REAL NOT NULL,  -- share of answered requests logged, in (0, 1]
    max_bytes INTEGER NOT NULL, -- the model's folder is kept under this
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL
) STRICT;
"""


@dataclass(frozen=True)
class LogConfig:
    model: str
    sample_rate: float
    max_bytes: int
    updated_at: float
    updated_by: str


class LogConfigStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        ensure_schema(connection, SCHEMA)
        self._db = connection

    def all(self) -> dict[str, LogConfig]:
        return {row["model"]: _config(row) for row in self._db.execute("SELECT * FROM prediction_logs")}

    def get(self, model: str) -> LogConfig | None:
        row = self._db.execute("SELECT * FROM prediction_logs WHERE model = ?", (model,)).fetchone()
        return _config(row) if row is not None else None

    def put(self, model: str, sample_rate: float, max_bytes: int, actor: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO prediction_logs VALUES (?, ?, ?, ?, ?)",
            (model, sample_rate, max_bytes, time.time(), actor),
        )

    def delete(self, model: str) -> bool:
        return self._db.execute("DELETE FROM prediction_logs WHERE model = ?", (model,)).rowcount == 1


def _config(row: sqlite3.Row) -> LogConfig:
    return LogConfig(row["model"], row["sample_rate"], row["max_bytes"], row["updated_at"], row["updated_by"])
