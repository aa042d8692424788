"""The prediction log's data path: sampled answers queued on the request path, written by a thread.

On the request path :meth:`PredictionLog.observe` looks the model up among the logged ones (a
model that is not logged costs that one dict lookup), draws a random number, and for a sampled
request appends to a bounded deque; a full queue (requests or bytes) drops the request and
counts it. :meth:`PredictionLog.reward` does the same for feedback. A writer thread, not the
event loop, wakes every ``flush_s`` or once ``flush_requests`` are queued, takes both queues and
writes one Parquet file per model and kind (``LogFolder.write``). A write that fails (a full
disk, a folder that cannot be made) drops its rows, counts them, and is logged at most once a
minute per model: nothing of it reaches a prediction.

The queues hold the request's own arrays (no copy); they are turned into a table in the thread.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import pyarrow as pa

from gateway.catalog import ServedVersion
from gateway.predictionlog.folder import PREDICTIONS, REWARDS, LogFolder
from gateway.predictionlog.rows import Answered, Reward, prediction_table, reward_table
from gateway.predictionlog.store import LogConfig

log = logging.getLogger(__name__)

QUEUE_FULL = "queue_full"
WRITE_ERROR = "write_error"
OVER_CAP = "over_cap"
REWARD = "reward_"
"""Prefix of the reasons a reward was dropped for (reward_queue_full, ...)."""
WARN_EVERY_S = 60.0


def _ignore(*args: object) -> None:
    return None


@dataclass(frozen=True)
class LogCounters:
    """Where the log reports what it wrote and dropped (Prometheus counters in the gateway)."""

    written: Callable[[str, str, int], None] = _ignore
    """model, kind (predictions or rewards), rows."""
    dropped: Callable[[str, str, int], None] = _ignore
    """model, reason, rows (a reward is one row)."""
    rotated: Callable[[str, int], None] = _ignore
    """model, files deleted to stay under the cap."""


class _Keyed(Protocol):
    model: str


Item = TypeVar("Item", bound=_Keyed)


class PredictionLog:
    def __init__(
        self,
        folder: LogFolder,
        *,
        flush_s: float = 1.0,
        flush_requests: int = 1000,
        max_queued: int = 10_000,
        max_queued_bytes: int = 64 * 2**20,
        seed: int | None = None,
        counters: LogCounters | None = None,
    ) -> None:
        self.folder = folder
        self._flush_s = flush_s
        self._flush_requests = flush_requests
        self._max_queued = max_queued
        self._max_queued_bytes = max_queued_bytes
        self._random = random.Random(seed).random
        self._counters = counters or LogCounters()
        self._configs: dict[str, LogConfig] = {}
        self._rates: dict[str, float] = {}
        self._answers: deque[Answered] = deque()
        self._rewards: deque[Reward] = deque()
        # Bytes queued = in - out; each has one writer (the event loop; the flush, under _lock).
        self._bytes_in = 0
        self._bytes_out = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._warned: dict[str, float] = {}

    def configure(self, configs: Mapping[str, LogConfig]) -> None:
        """Log exactly these models from now on (their queued rows go when they are left out)."""
        self._configs = dict(configs)
        self._rates = {model: config.sample_rate for model, config in configs.items()}

    # ---- the request path ----

    def observe(
        self,
        served: ServedVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        request_id: str,
    ) -> None:
        """Keep this answered request for the log, if its model is logged and it is sampled."""
        rate = self._rates.get(served.name)
        if rate is None or (rate < 1.0 and self._random() >= rate):
            return
        size = _nbytes(inputs) + _nbytes(outputs)
        queued = len(self._answers)
        if queued >= self._max_queued or self._bytes_in - self._bytes_out + size > self._max_queued_bytes:
            self._counters.dropped(served.name, QUEUE_FULL, _rows(served.max_batch_size > 0, inputs))
            return
        self._bytes_in += size
        batched = served.max_batch_size > 0
        answered = Answered(
            served.name, served.version, request_id, time.time(), inputs, outputs, batched, size
        )
        self._answers.append(answered)
        if queued + 1 == self._flush_requests:
            self._wake.set()

    def reward(self, model: str, version: str, request_id: str, reward: float) -> None:
        """Keep a feedback reward for the log, if ``model`` is logged."""
        if model not in self._rates:
            return
        if len(self._rewards) >= self._max_queued:
            self._counters.dropped(model, REWARD + QUEUE_FULL, 1)
            return
        self._rewards.append(Reward(model, version, request_id, reward, time.time()))

    # ---- the writer ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer thread and write what is queued (blocking: call it from a thread)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.flush()

    def flush(self) -> None:
        """Write every queued answer and reward now (any thread; one flush at a time)."""
        with self._lock:
            answers = _taken(self._answers)
            self._bytes_out += sum(answered.size for answered in answers)
            rewards = _taken(self._rewards)
            for model, records in _by_model(answers).items():
                self._write_answers(model, records)
            for model, given in _by_model(rewards).items():
                self._write_rewards(model, given)

    def purge(self, model: str) -> None:
        """Delete the model's files (call it once the model is no longer configured)."""
        with self._lock:
            self.folder.purge(model)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._flush_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the writer must outlive any one bad flush
                log.exception("prediction log flush failed")

    def _write_answers(self, model: str, records: list[Answered]) -> None:
        config = self._configs.get(model)
        if config is None:  # logging was turned off since they were queued: they go too
            return
        try:
            table = prediction_table(records)
        except (ValueError, TypeError, pa.ArrowException) as error:
            rows = sum(_rows(record.batched, record.inputs) for record in records)
            self._counters.dropped(model, WRITE_ERROR, rows)
            self._warn(model, f"prediction log of {model}: {rows} rows dropped, not tabular: {error}")
            return
        if table is not None:
            self._write(model, PREDICTIONS, table, config, "")

    def _write_rewards(self, model: str, rewards: list[Reward]) -> None:
        config = self._configs.get(model)
        if config is not None:
            self._write(model, REWARDS, reward_table(rewards), config, REWARD)

    def _write(self, model: str, kind: str, table: pa.Table, config: LogConfig, prefix: str) -> None:
        try:
            written = self.folder.write(model, kind, table, config.max_bytes)
        except OSError as error:
            self._counters.dropped(model, prefix + WRITE_ERROR, table.num_rows)
            self._warn(model, f"prediction log of {model}: {table.num_rows} {kind} rows dropped: {error}")
            return
        if written.rotated:
            self._counters.rotated(model, written.rotated)
        if not written.fitted:
            self._counters.dropped(model, prefix + OVER_CAP, table.num_rows)
            self._warn(
                model, f"prediction log of {model}: a file of {table.num_rows} {kind} rows is over the cap"
            )
            return
        self._counters.written(model, kind, table.num_rows)

    def _warn(self, model: str, message: str) -> None:
        """Log ``message``, unless this model had a warning in the last minute (they are counted)."""
        now = time.monotonic()
        if now - self._warned.get(model, -math.inf) >= WARN_EVERY_S:
            self._warned[model] = now
            log.warning("%s (such drops are counted in mdeploy_prediction_log_dropped_total)", message)


def _taken(queue: deque[Item]) -> list[Item]:
    """What ``queue`` holds now, taken out (appends from another thread go on meanwhile)."""
    return [queue.popleft() for _ in range(len(queue))]


def _by_model(items: list[Item]) -> dict[str, list[Item]]:
    grouped: dict[str, list[Item]] = {}
    for item in items:
        grouped.setdefault(item.model, []).append(item)
    return grouped


def _nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    size = 0
    for array in arrays.values():
        size += array.nbytes
    return size


def _rows(batched: bool, inputs: Mapping[str, np.ndarray]) -> int:
    """How many rows a request has (its first input's length; 1 without batching)."""
    shape = getattr(next(iter(inputs.values()), None), "shape", ())
    return int(shape[0]) if batched and shape else 1
