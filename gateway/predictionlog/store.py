"""Which models keep a prediction log, with what sample rate and cap: one table in the gateway's
database (``prediction_logs``), so that every gateway process logs the same models.

Each function is a statement on a SQLAlchemy connection, so a change and its audit event go
in one transaction (``gateway.database.engine.Database.run``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from gateway.database.schema import prediction_logs
from gateway.database.statements import upsert


@dataclass(frozen=True)
class LogConfig:
    model: str
    sample_rate: float
    max_bytes: int
    updated_at: float
    updated_by: str


def all_configs(connection: sa.Connection) -> dict[str, LogConfig]:
    rows = connection.execute(sa.select(prediction_logs)).mappings()
    return {row["model"]: _config(row) for row in rows}


def config_of(connection: sa.Connection, model: str) -> LogConfig | None:
    query = sa.select(prediction_logs).where(prediction_logs.c.model == model)
    row = connection.execute(query).mappings().first()
    return _config(row) if row is not None else None


def put_config(connection: sa.Connection, model: str, sample_rate: float, max_bytes: int, actor: str) -> None:
    row = {
        "model": model,
        "sample_rate": sample_rate,
        "max_bytes": max_bytes,
        "updated_at": time.time(),
        "updated_by": actor,
    }
    connection.execute(upsert(connection, prediction_logs, row, ["model"]))


def delete_config(connection: sa.Connection, model: str) -> bool:
    return (
        connection.execute(sa.delete(prediction_logs).where(prediction_logs.c.model == model)).rowcount == 1
    )


def _config(row: Mapping[Any, Any]) -> LogConfig:
    return LogConfig(row["model"], row["sample_rate"], row["max_bytes"], row["updated_at"], row["updated_by"])
