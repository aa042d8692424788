"""Evaluations recorded on versions, and each model's default gates with their evaluation set.

An evaluation is kept as the JSON the admin API answers with, one row per run, so ``info``,
``compare`` and the console show what a version measured and which gates it passed. A model's
default gates apply to every later push; their evaluation set is stored once under its sha256
(``evaluation_sets``; in the data folder's ``evalsets/`` before migration 0002), and the row names it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel

from core.errors import NotFound
from gateway.database.schema import evaluation_sets, model_gates, version_evaluations
from gateway.database.statements import insert_missing, upsert

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
    """Statements on a SQLAlchemy connection (so a change and its audit event go in one
    transaction), and the evaluation sets' files."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def record(
        self, connection: sa.Connection, model: str, version: str, actor: str, evaluation_json: str
    ) -> None:
        table = version_evaluations
        connection.execute(
            sa.insert(table).values(
                model=model, version=version, at=time.time(), actor=actor, evaluation=evaluation_json
            )
        )
        kept = (
            sa.select(table.c.id)
            .where(table.c.model == model, table.c.version == version)
            .order_by(table.c.id.desc())
            .limit(MAX_KEPT)
        )
        connection.execute(
            sa.delete(table).where(
                table.c.model == model, table.c.version == version, table.c.id.not_in(kept)
            )
        )

    def of_version(self, connection: sa.Connection, model: str, version: str) -> list[str]:
        """The version's evaluations as JSON, newest first."""
        table = version_evaluations
        query = (
            sa.select(table.c.evaluation)
            .where(table.c.model == model, table.c.version == version)
            .order_by(table.c.id.desc())
        )
        return list(connection.execute(query).scalars())

    def save_data(self, connection: sa.Connection, data: bytes, digest: str) -> None:
        """The evaluation set, once per digest, in the database every gateway host reads."""
        row = {"digest": digest, "data": data, "created_at": time.time()}
        connection.execute(insert_missing(connection, evaluation_sets, row, ["digest"]))

    def data(self, connection: sa.Connection, digest: str) -> bytes:
        """The evaluation set ``digest``; from the data folder for one stored before migration 0002."""
        query = sa.select(evaluation_sets.c.data).where(evaluation_sets.c.digest == digest)
        stored = connection.execute(query).scalar_one_or_none()
        if stored is not None:
            return bytes(stored)
        try:
            return self.data_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"evaluation set sha256:{digest} is gone; set the gates again") from None

    def set_gates(  # one row's columns
        self,
        connection: sa.Connection,
        model: str,
        gates: list[str],
        auto_promote: bool,
        digest: str,
        rows: int,
        actor: str,
    ) -> None:
        row = {
            "model": model,
            "gates": json.dumps(gates),
            "auto_promote": int(auto_promote),
            "data_sha256": digest,
            "rows": rows,
            "updated_at": time.time(),
            "updated_by": actor,
        }
        connection.execute(upsert(connection, model_gates, row, ["model"]))

    def gates(self, connection: sa.Connection, model: str) -> GateConfig | None:
        row = (
            connection.execute(sa.select(model_gates).where(model_gates.c.model == model)).mappings().first()
        )
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

    def clear_gates(self, connection: sa.Connection, model: str) -> bool:
        return connection.execute(sa.delete(model_gates).where(model_gates.c.model == model)).rowcount == 1

    def data_path(self, digest: str) -> Path:
        """Where mdeploy before migration 0002 kept it."""
        return self._folder / f"{digest}.npz"
