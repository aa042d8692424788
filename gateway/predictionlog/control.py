"""What the admin API does with prediction logs: turn a model's on, change or off (each change
audited), report what its folder holds, and export a time range with rewards joined.

The setting lives in the database (``store``); every gateway process reads it again every
``refresh_s``, and the one that made a change at once. A model turned off stops being logged in
the other processes within ``refresh_s``; rows they had queued are dropped, not written.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel

from core.errors import InvalidInput
from core.tasks import cancelled
from gateway.database.engine import Database
from gateway.predictionlog.folder import PREDICTIONS, REWARDS
from gateway.predictionlog.log import PredictionLog
from gateway.predictionlog.rows import TIMESTAMP, join_rewards
from gateway.predictionlog.store import LogConfig, all_configs, config_of, delete_config, put_config
from gateway.registry import audit

log = logging.getLogger(__name__)

MiB = 2**20
MIN_MB = 1
MAX_MB = 100 * 1024
DEFAULT_MAX_MB = 1024
DEFAULT_SAMPLE_RATE = 1.0
MAX_SINCE_S = 10 * 365 * 86400.0
MEDIA_TYPE = "application/vnd.apache.parquet"
_EMPTY = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("timestamp", TIMESTAMP),
        ("model", pa.string()),
        ("version", pa.string()),
        ("reward", pa.float64()),
        ("rewarded_at", TIMESTAMP),
    ]
)


class LogStatus(BaseModel):
    """A model's prediction log: whether it is on, its setting, and what its folder holds."""

    model: str
    enabled: bool
    sample_rate: float | None
    """Share of answered requests logged (None when off)."""
    max_mb: int | None
    """The folder is kept under this many MiB, oldest files deleted first (None when off)."""
    updated_at: AwareDatetime | None
    updated_by: str | None
    files: int
    bytes: int
    rows: int
    """Prediction rows in the files (one per input row of a request)."""
    rewards: int
    """Rewards in the files (feedback that arrived while logging was on)."""
    oldest: AwareDatetime | None
    newest: AwareDatetime | None


@dataclass(frozen=True)
class Export:
    data: bytes
    """A Parquet file."""
    rows: int
    rewarded: int
    """Rows whose request got a reward."""


class PredictionLogs:
    def __init__(
        self,
        database: Database,
        prediction_log: PredictionLog,
        *,
        check_model: Callable[[str], Awaitable[object]],
        refresh_s: float,
        max_export_rows: int,
        max_export_bytes: int,
    ) -> None:
        self.log = prediction_log
        self._db = database
        self._check_model = check_model
        self._refresh_s = refresh_s
        self._max_export_rows = max_export_rows
        self._max_export_bytes = max_export_bytes
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self.log.start()
        self._task = asyncio.create_task(self._refresh_every(), name="prediction-log-settings")

    async def close(self) -> None:
        """Stop reading the settings, then write what is queued."""
        await cancelled(self._task)
        await asyncio.to_thread(self.log.close)

    async def refresh(self) -> None:
        self.log.configure(await self._db.read(all_configs))

    async def _refresh_every(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except sa.exc.SQLAlchemyError as error:  # a locked or unreachable database: try again
                log.warning("prediction log settings not read: %s", error)

    # ---- the admin API ----

    async def enable(
        self, model: str, sample_rate: float | None, max_mb: int | None, actor: str
    ) -> LogStatus:
        """Log ``model`` (a value not given keeps its current one, or the default)."""
        await self._check_model(model)
        _check_setting(sample_rate, max_mb)

        def write(connection: sa.Connection) -> None:
            before = config_of(connection, model)
            rate, cap = _setting(before, sample_rate, max_mb)
            if before is None or (before.sample_rate, before.max_bytes) != (rate, cap):
                put_config(connection, model, rate, cap, actor)
                event = audit.AuditEvent(
                    actor=actor,
                    action="logs-enable" if before is None else "logs-change",
                    model=model,
                    from_value=_described(before),
                    to_value=_described_values(rate, cap),
                    details={"sample_rate": rate, "max_mb": cap // MiB},
                )
                audit.append(connection, event)

        await self._db.run(write)
        await self.refresh()
        return await self.status(model)

    async def disable(self, model: str, purge: bool, actor: str) -> LogStatus:
        """Stop logging ``model``; with ``purge`` its files are deleted too."""
        await self._check_model(model)

        def write(connection: sa.Connection) -> None:
            before = config_of(connection, model)
            if delete_config(connection, model):
                event = audit.AuditEvent(
                    actor=actor,
                    action="logs-disable",
                    model=model,
                    from_value=_described(before),
                    to_value="off",
                    details={"purged": purge},
                )
                audit.append(connection, event)
            elif purge:
                audit.append(connection, audit.AuditEvent(actor=actor, action="logs-purge", model=model))

        await self._db.run(write)
        await self.refresh()
        if purge:
            await asyncio.to_thread(self._purge, model)
        return await self.status(model)

    async def status(self, model: str) -> LogStatus:
        await self._check_model(model)
        config = await self._db.read(config_of, model)
        stats = await asyncio.to_thread(self.log.folder.stats, model)
        return LogStatus(
            model=model,
            enabled=config is not None,
            sample_rate=config.sample_rate if config else None,
            max_mb=config.max_bytes // MiB if config else None,
            updated_at=datetime.fromtimestamp(config.updated_at, UTC) if config else None,
            updated_by=config.updated_by if config else None,
            files=stats.files,
            bytes=stats.bytes,
            rows=stats.rows,
            rewards=stats.rewards,
            oldest=stats.oldest,
            newest=stats.newest,
        )

    async def export(self, model: str, since_s: float, until_s: float = 0.0) -> Export:
        """The rows logged from ``since_s`` until ``until_s`` seconds ago, each with its request's
        latest reward; this process's queue is written first, so they include its last answers."""
        await self._check_model(model)
        if not (math.isfinite(since_s) and 0 < since_s <= MAX_SINCE_S):
            raise InvalidInput(
                f"since must be a number of seconds from 1 to {MAX_SINCE_S:.0f}, not {since_s}"
            )
        if not (math.isfinite(until_s) and 0 <= until_s < since_s):
            raise InvalidInput(f"until must be a number of seconds from 0 to less than since, not {until_s}")
        now = time.time()
        await asyncio.to_thread(self.log.flush)
        return await asyncio.to_thread(self._export, model, now - since_s, now - until_s)

    def reward(self, model: str, version: str, request_id: str, reward: float) -> None:
        self.log.reward(model, version, request_id, reward)

    def _purge(self, model: str) -> None:
        self.log.flush()  # the model is off: what it had queued is dropped, not written
        self.log.purge(model)

    def _export(self, model: str, start: float, end: float) -> Export:
        limits = {"max_rows": self._max_export_rows, "max_bytes": self._max_export_bytes}
        folder = self.log.folder
        predictions = folder.read(model, PREDICTIONS, start, end, **limits)
        if predictions is None:
            table = _EMPTY.empty_table()
        else:
            rewards = folder.read(model, REWARDS, start, time.time() + 3600, **limits)
            joined = join_rewards(predictions, rewards if rewards is not None else _EMPTY_REWARDS)
            keys = [("timestamp", "ascending"), ("request_id", "ascending"), ("row", "ascending")]
            table = joined.sort_by(keys).replace_schema_metadata(predictions.schema.metadata)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        rewarded = table.num_rows - table["reward"].null_count
        return Export(sink.getvalue().to_pybytes(), table.num_rows, rewarded)


_EMPTY_REWARDS = pa.schema(
    [
        ("request_id", pa.string()),
        ("timestamp", TIMESTAMP),
        ("model", pa.string()),
        ("version", pa.string()),
        ("reward", pa.float64()),
    ]
).empty_table()


def _check_setting(sample_rate: float | None, max_mb: int | None) -> None:
    if sample_rate is not None and not (math.isfinite(sample_rate) and 0 < sample_rate <= 1):
        raise InvalidInput(
            f"sample_rate must be more than 0 and at most 1 (0.1 logs one request in ten), not {sample_rate}"
        )
    if max_mb is not None and not MIN_MB <= max_mb <= MAX_MB:
        raise InvalidInput(
            f"max_mb must be a whole number of MiB from {MIN_MB} to {MAX_MB} (100 GiB), not {max_mb}"
        )


def _setting(before: LogConfig | None, sample_rate: float | None, max_mb: int | None) -> tuple[float, int]:
    """(sample rate, cap in bytes): those given, else ``before``'s, else the defaults."""
    rate = before.sample_rate if before else DEFAULT_SAMPLE_RATE
    cap = before.max_bytes if before else DEFAULT_MAX_MB * MiB
    return (rate if sample_rate is None else sample_rate), (cap if max_mb is None else max_mb * MiB)


def _described(config: LogConfig | None) -> str | None:
    return _described_values(config.sample_rate, config.max_bytes) if config else None


def _described_values(sample_rate: float, max_bytes: int) -> str:
    return f"sample {sample_rate:g}, cap {max_bytes // MiB} MiB"
