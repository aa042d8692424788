"""Each model's log files: ``<data dir>/prediction-logs/<model>/``, capped, rotated, read back.

Every flush writes one closed Parquet file, ``predictions-<UTC time>-<pid>-<sequence>.parquet``
or ``rewards-...``: written under a hidden ``.partial`` name, then renamed, so a reader in any
process sees only whole files. Each file's footer carries the first and last timestamp of its
rows (``mdeploy.first``/``mdeploy.last``), so stats and exports skip files by their footer.

Rotation happens before a write: the model's oldest files are deleted until the new one fits
under the cap; a file larger than the whole cap is not written at all. Several gateway
processes may rotate one folder at once: a file another process deleted first is skipped, and
the folder can pass its cap by what the others wrote since they looked.

Compaction (merging the many small files of busy models) is not done: exports read many small
files, and a 1 s flush per process makes 86,400 files a day at most.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import InvalidInput, PayloadTooLarge
from gateway.predictionlog.rows import TIMESTAMP, merged_shapes, shapes_of, with_shapes

PREDICTIONS = "predictions"
REWARDS = "rewards"
FOLDER_NAME = "prediction-logs"
_FILE = re.compile(r"^(predictions|rewards)-(\d{8}T\d{12}Z)-(\d+)-(\d+)\.parquet$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_FIRST, _LAST = b"mdeploy.first", b"mdeploy.last"
STALE_PARTIAL_S = 3600.0
"""A ``.partial`` file this old was left by a process that died mid-write: it is deleted."""


@dataclass(frozen=True)
class LogFile:
    kind: str
    path: Path
    size: int
    order: tuple[str, int, int]
    """When it was written (UTC, as in its name), by which process, its sequence: oldest first."""


@dataclass(frozen=True)
class Footer:
    rows: int
    first: float
    last: float


@dataclass(frozen=True)
class Written:
    rotated: int
    """Older files deleted to make room."""
    fitted: bool
    """False: the file alone is larger than the cap, and was not written."""


@dataclass(frozen=True)
class FolderStats:
    files: int
    bytes: int
    rows: int
    rewards: int
    oldest: datetime | None
    newest: datetime | None


class LogFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._sequence = 0
        self._sequence_lock = threading.Lock()
        self._footers: dict[tuple[str, int], Footer] = {}
        self._footers_lock = threading.Lock()

    def folder(self, model: str) -> Path:
        if not _MODEL.fullmatch(model):
            raise InvalidInput(f"{model!r} is not a model name")
        return self.root / model

    # ---- writing (the writer thread) ----

    def write(self, model: str, kind: str, table: pa.Table, cap_bytes: int) -> Written:
        """Write ``table`` as one closed file, deleting the oldest files until it fits ``cap_bytes``.

        Raises OSError when the folder cannot be written (a full disk, a path that is a file).
        """
        timestamps = table["timestamp"]
        first, last = pc.min(timestamps).value, pc.max(timestamps).value  # µs since the epoch
        metadata = {**(table.schema.metadata or {}), _FIRST: str(first / 1e6), _LAST: str(last / 1e6)}
        sink = pa.BufferOutputStream()
        pq.write_table(table.replace_schema_metadata(metadata), sink, compression="zstd")
        data = sink.getvalue()
        if data.size > cap_bytes:
            return Written(rotated=0, fitted=False)
        folder = self.folder(model)
        folder.mkdir(parents=True, exist_ok=True)
        rotated = self._make_room(self.files(model), cap_bytes - data.size)
        path = folder / self._new_name(kind)
        partial = folder / f".{path.name}.partial"
        try:
            with partial.open("wb") as file:
                file.write(data)
            os.replace(partial, path)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        return Written(rotated=rotated, fitted=True)

    def _make_room(self, files: list[LogFile], room: int) -> int:
        """Delete the oldest of ``files`` until the rest take at most ``room`` bytes; how many went."""
        total, deleted = sum(f.size for f in files), 0
        for file in files:
            if total <= room:
                break
            with contextlib.suppress(FileNotFoundError):  # another process rotated it first
                file.path.unlink()
                deleted += 1
            total -= file.size
        return deleted

    def _new_name(self, kind: str) -> str:
        with self._sequence_lock:
            self._sequence += 1
            sequence = self._sequence
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return f"{kind}-{stamp}-{os.getpid()}-{sequence}.parquet"

    # ---- reading ----

    def files(self, model: str, kind: str | None = None) -> list[LogFile]:
        """The model's files (of ``kind``, or both), oldest first; stale partial files are deleted."""
        found: list[LogFile] = []
        try:
            entries = list(os.scandir(self.folder(model)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        for entry in entries:
            matched = _FILE.fullmatch(entry.name)
            if matched is None:
                _sweep_partial(entry)
                continue
            if kind is not None and matched.group(1) != kind:
                continue
            try:
                size = entry.stat().st_size
            except FileNotFoundError:
                continue
            order = (matched.group(2), int(matched.group(3)), int(matched.group(4)))
            found.append(LogFile(matched.group(1), Path(entry.path), size, order))
        return sorted(found, key=lambda f: f.order)

    def stats(self, model: str) -> FolderStats:
        files = self.files(model)
        footers = [(f, self.footer(f)) for f in files]
        present = [(f, footer) for f, footer in footers if footer is not None]
        predictions = [footer for f, footer in present if f.kind == PREDICTIONS]
        return FolderStats(
            files=len(present),
            bytes=sum(f.size for f, _ in present),
            rows=sum(footer.rows for footer in predictions),
            rewards=sum(footer.rows for f, footer in present if f.kind == REWARDS),
            oldest=_time(min(footer.first for footer in predictions)) if predictions else None,
            newest=_time(max(footer.last for footer in predictions)) if predictions else None,
        )

    def footer(self, file: LogFile) -> Footer | None:
        """Rows and time span of ``file`` (remembered); None once it is gone or unreadable."""
        key = (str(file.path), file.size)
        with self._footers_lock:
            known = self._footers.get(key)
        if known is not None:
            return known
        try:
            metadata = pq.read_metadata(file.path)
        except (OSError, pa.ArrowException):
            return None
        extra = metadata.metadata or {}
        footer = Footer(metadata.num_rows, float(extra.get(_FIRST, 0)), float(extra.get(_LAST, 0)))
        with self._footers_lock:
            if len(self._footers) > 100_000:
                self._footers.clear()
            self._footers[key] = footer
        return footer

    def read(
        self, model: str, kind: str, start: float, end: float, *, max_rows: int, max_bytes: int
    ) -> pa.Table | None:
        """The ``kind`` rows of ``model`` stamped in [start, end) (seconds since the epoch), in
        file order; None when there are none. PayloadTooLarge past ``max_rows`` or ``max_bytes``."""
        parts: list[pa.Table] = []
        rows = size = 0
        for table in self._tables(model, kind, start, end):
            rows, size = rows + table.num_rows, size + table.nbytes
            if rows > max_rows or size > max_bytes:
                raise PayloadTooLarge(
                    f"the export holds more than {max_rows:,} rows or {max_bytes // 2**20:,} MiB; "
                    "ask for a shorter time (a smaller since, or an until)"
                )
            parts.append(table)
        if not parts:
            return None
        shapes = merged_shapes(shapes_of(part.schema) for part in parts)
        joined = pa.concat_tables(
            [p.replace_schema_metadata(None) for p in parts], promote_options="permissive"
        )
        return with_shapes(joined, shapes) if kind == PREDICTIONS else joined

    def _tables(self, model: str, kind: str, start: float, end: float) -> Iterator[pa.Table]:
        low = pa.scalar(int(start * 1e6), pa.int64()).cast(TIMESTAMP)
        high = pa.scalar(int(end * 1e6), pa.int64()).cast(TIMESTAMP)
        for file in self.files(model, kind):
            footer = self.footer(file)
            if footer is None or footer.last < start or footer.first >= end:
                continue
            try:
                table = pq.read_table(file.path)
            except FileNotFoundError:  # rotated away since it was listed
                continue
            inside = pc.and_(pc.greater_equal(table["timestamp"], low), pc.less(table["timestamp"], high))
            table = table.filter(inside)
            if table.num_rows:
                yield table

    def purge(self, model: str) -> None:
        shutil.rmtree(self.folder(model), ignore_errors=True)


def _sweep_partial(entry: os.DirEntry[str]) -> None:
    if not entry.name.endswith(".partial"):
        return
    with contextlib.suppress(OSError):
        if time.time() - entry.stat().st_mtime > STALE_PARTIAL_S:
            os.unlink(entry.path)


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
