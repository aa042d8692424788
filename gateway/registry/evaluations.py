"""Evaluations recorded on versions, and each model's default gates with their evaluation set.

An evaluation is kept as the JSON the admin API answers with, one row per run, so ``info``,
``compare`` and the console show what a version measured and which gates it passed. A model's
default gates apply to every later push; their evaluation set is stored once under its sha256
in the data folder (``evalsets/``), and the row names it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from pydantic import AwareDatetime, BaseModel

from gateway.db import ensure_schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS version_evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    evaluation TEXT NOT NULL  -- the Evaluation as JSON
) STRICT;
CREATE INDEX IF NOT EXISTS version_evaluations_version ON version_evaluations (model, version, id);
CREATE TABLE IF NOT EXISTS model_gates (
    model TEXT PRIMARY KEY,
    gates TEXT NOT NULL,            -- JSON list of gate expressions
    auto_promote INTEGER NOT NULL,  -- 1: a push that passes every gate goes live
    data_sha256 TEXT NOT NULL,      -- the evaluation set, in evalsets/<sha256>.npz
    rows INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL
) STRICT;
"""
MAX_KEPT = 100
"""Evaluations kept per version (the newest)."""


class GateConfig(BaseModel):
    """A model's default gates: every later push is evaluated on ``data_sha256`` and judged."""

    model: str
    gates: list[str]
    auto_promote: bool
    """A push that passes every gate goes live by itself."""
    data_sha256: str
    rows: int
    updated_at: AwareDatetime
    updated_by: str


class EvaluationStore:
    def __init__(self, connection: sqlite3.Connection, folder: Path) -> None:
        ensure_schema(connection, SCHEMA)
        self._db = connection
        self._folder = folder

    def record(self, model: str, version: str, actor: str, evaluation_json: str) -> None:
        self._db.execute(
            "INSERT INTO version_evaluations (model, version, at, actor, evaluation) VALUES (?, ?, ?, ?, ?)",
            (model, version, time.time(), actor, evaluation_json),
        )
        self._db.execute(
            "DELETE FROM version_evaluations WHERE model = ? AND version = ? AND id NOT IN"
            " (SELECT id FROM version_evaluations WHERE model = ? AND version = ? ORDER BY id DESC LIMIT ?)",
            (model, version, model, version, MAX_KEPT),
        )

    def of_version(self, model: str, version: str) -> list[str]:
        """The version's evaluations as JSON, newest first."""
        rows = self._db.execute(
            "SELECT evaluation FROM version_evaluations WHERE model = ? AND version = ? ORDER BY id DESC",
            (model, version),
        )
        return [row["evaluation"] for row in rows]

    def set_gates(  # one row's columns
        self,
        model: str,
        gates: list[str],
        auto_promote: bool,
        data: bytes,
        digest: str,
        rows: int,
        actor: str,
    ) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        path = self.data_path(digest)
        if not path.exists():
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        self._db.execute(
            "INSERT OR REPLACE INTO model_gates VALUES (?, ?, ?, ?, ?, ?, ?)",
            (model, json.dumps(gates), int(auto_promote), digest, rows, time.time(), actor),
        )

    def gates(self, model: str) -> GateConfig | None:
        row = self._db.execute("SELECT * FROM model_gates WHERE model = ?", (model,)).fetchone()
        if row is None:
            return None
        return GateConfig(
            model=row["model"],
            gates=json.loads(row["gates"]),
            auto_promote=bool(row["auto_promote"]),
            data_sha256=row["data_sha256"],
            rows=row["rows"],
            updated_at=row["updated_at"],
            updated_by=row["updated_by"],
        )

    def clear_gates(self, model: str) -> bool:
        return self._db.execute("DELETE FROM model_gates WHERE model = ?", (model,)).rowcount == 1

    def data_path(self, digest: str) -> Path:
        return self._folder / f"{digest}.npz"
