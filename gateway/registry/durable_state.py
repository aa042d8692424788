"""The registry's durable state and the operations that keep its three parts consistent.

The database is the truth; the blob store and this host's Triton repository are derived from it:

* a blob no row references is an orphan and is removed;
* a version folder exists exactly for live versions (and for pending ones of live sessions),
  laid out from the blob store on this host whenever one is missing (a version pushed through
  another gateway host, or a repository wiped);
* each model's config.pbtxt describes its live versions.

:meth:`RegistryStorage.recover` rolls back the pushes of dead sessions; :meth:`repair`
brings the repository in line. Both run when a registry opens and on every reconcile tick,
and neither touches the work of a live session (on any host: ``liveness`` asks the database
on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from core.errors import Unavailable
from gateway.database.engine import Database
from gateway.registry import sessions, tables
from gateway.registry.blobs import BlobStore
from gateway.registry.records import VersionRecord
from gateway.registry.repository import TritonRepository
from gateway.registry.served import LiveVersion
from gateway.registry.sessions import Session, SessionLiveness
from gateway.registry.tables import Row, State
from gateway.registry.triton_config import model_config
from modelpkg import Limits, Manifest, read_package
from protos.generated import model_config_pb2 as mc

log = logging.getLogger(__name__)


@dataclass
class RegistryStorage:
    database: Database
    store: BlobStore
    repository: TritonRepository
    work_dir: Path
    session: Session
    liveness: SessionLiveness
    limits: Limits
    _manifests: dict[str, Manifest] = field(default_factory=dict)

    # ---- reading rows ----

    def manifest(self, row: Row) -> Manifest:
        """The row's manifest, parsed once per digest (a digest's manifest never changes)."""
        digest: str = row["digest"]
        cached = self._manifests.get(digest)
        if cached is None:
            cached = self._manifests[digest] = Manifest.model_validate_json(row["manifest"])
        return cached

    def record(self, row: Row) -> VersionRecord:
        return VersionRecord(
            model=row["model"],
            version=row["version"],
            package_version=row["package_version"],
            digest=row["digest"],
            size=row["size"],
            state=State(row["state"]),
            manifest=self.manifest(row),
            pushed_by=row["pushed_by"],
            pushed_at=_time(row["pushed_at"]),
            retired_by=row["retired_by"],
            retired_at=_time(row["retired_at"]) if row["retired_at"] is not None else None,
        )

    def live_version(self, row: Row) -> LiveVersion:
        return LiveVersion(row["model"], row["version"], self.manifest(row), row["digest"])

    async def rows(self, state: State | None = None, model: str | None = None) -> list[Row]:
        return await self.database.read(tables.rows, state, model)

    async def row(self, model: str, version: int) -> Row | None:
        return await self.database.read(tables.row, model, version)

    async def live(self, model: str | None = None) -> list[LiveVersion]:
        return [self.live_version(row) for row in await self.rows(State.LIVE, model)]

    async def versions_by_model(self, state: State) -> dict[str, set[int]]:
        return _by_model(await self.rows(state))

    # ---- the repository ----

    async def write_model_config(self, model: str) -> None:
        """config.pbtxt (and labels.txt) for the live versions; none without a live version."""
        self._write_config(model, await self.live(model))

    def _write_config(self, model: str, live: list[LiveVersion]) -> None:
        if not live:
            self.repository.remove_config(model)
            return
        newest = max(live, key=lambda item: item.version).manifest
        self.repository.write_config(
            model, live_config(model, live), newest.labels.names if newest.labels else None
        )

    async def lay_out(self, items: list[LiveVersion]) -> None:
        """Make sure this host's repository holds the files of ``items``, from the blob store."""
        for item in items:
            if not self.repository.has_version(item.model, item.version):
                await self._rebuild_version(item.model, item.version, item.digest)

    async def _rebuild_version(self, model: str, version: int, digest: str) -> None:
        log.info("laying out model %s version %s from its package", model, version)
        path = await self.store.local_path(digest)
        package = await asyncio.to_thread(read_package, path, self.limits)
        await asyncio.to_thread(self.repository.install_version, model, version, package, self.session.folder)

    # ---- rolling back ----

    async def undo_pending(self, row: Row) -> None:
        """Remove what a pending push wrote, then its row (last: the row anchors the rest).

        The caller's session must own the row.
        """
        model, version = row["model"], row["version"]
        self.repository.remove_version(model, version)
        if row["prior_state"] is None:  # a re-pushed retired version keeps its package
            await self.store.remove(row["digest"])
        await self.database.run(tables.drop_pending, model, version, self.session.id)
        await self.write_model_config(model)

    async def recover(self) -> None:
        """Roll back the pushes of dead sessions and remove their files and orphaned blobs."""
        sessions.remove_dead(self.work_dir)
        for row in await self.rows(State.PENDING):
            owner = row["session"]
            try:
                if owner == self.session.id or (owner and await self.liveness.is_alive(owner)):
                    continue
            except Unavailable as error:  # unknown is not dead: look again next round
                log.warning("cannot tell whether session %s still runs: %s", owner, error.message)
                continue
            # Claim it first: another process may be recovering the same row.
            claimed = await self.database.run(
                tables.take_over, row["model"], row["version"], owner, self.session.id
            )
            if claimed:
                log.warning(
                    "rolling back the unfinished push of model %s version %s (its process died)",
                    row["model"],
                    row["version"],
                )
                await self.undo_pending(row)
        await self._remove_orphan_blobs()

    async def _remove_orphan_blobs(self) -> None:
        # Listing before reading the rows: a blob is stored only after its row exists.
        stored = await self.store.digests()
        for digest in stored - await self.database.read(tables.digests):
            log.warning("removing package %s, which no version refers to", digest)
            await self.store.remove(digest)

    # ---- repair ----

    async def repair(self) -> None:
        """Make the repository hold exactly the live versions (pending ones of live sessions stay)."""
        layout = self.repository.layout()  # before the rows, as for blobs
        every = await self.rows()
        live = _by_model([row for row in every if row["state"] == State.LIVE])
        pending = _by_model([row for row in every if row["state"] == State.PENDING])
        for model, versions in layout.items():
            for version in versions - live.get(model, set()) - pending.get(model, set()):
                self.repository.remove_version(model, version)
        live_rows = [row for row in every if row["state"] == State.LIVE]
        await self.lay_out([self.live_version(row) for row in live_rows])
        for model in set(layout) | set(live):
            before = self.repository.config_text(model)
            self._write_config(model, [self.live_version(r) for r in live_rows if r["model"] == model])
            if before != self.repository.config_text(model):
                log.info("rewrote the repository configuration of model %s", model)


def _by_model(rows: list[Row]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for row in rows:
        found.setdefault(row["model"], set()).add(row["version"])
    return found


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def live_config(model: str, live: list[LiveVersion]) -> mc.ModelConfig:
    """The configuration serving ``live`` (not empty), described by the newest one's manifest."""
    newest = max(live, key=lambda item: item.version).manifest
    return model_config(model, newest, [item.version for item in live])
