"""The registry's durable state and the sync operations that keep its three parts consistent.

The database is the truth; the package store and the Triton repository are derived from it:

* a blob no row references is an orphan and is removed;
* a version folder exists exactly for live versions (and for pending ones of live sessions);
* each model's config.pbtxt describes its live versions.

:meth:`RegistryStorage.recover` rolls back the pushes of dead sessions; :meth:`repair`
brings the repository in line. Both run when a registry opens and on every reconcile tick,
and neither touches the work of a live session.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gateway.registry import sessions
from gateway.registry.package_store import PackageStore
from gateway.registry.records import VersionRecord
from gateway.registry.repository import TritonRepository
from gateway.registry.served import LiveVersion
from gateway.registry.sessions import Session
from gateway.registry.tables import State, Tables
from gateway.registry.triton_config import model_config
from modelpkg import Limits, Manifest, read_package
from protos.generated import model_config_pb2 as mc

log = logging.getLogger(__name__)


@dataclass
class RegistryStorage:
    tables: Tables
    store: PackageStore
    repository: TritonRepository
    work_dir: Path
    session: Session
    limits: Limits
    _manifests: dict[str, Manifest] = field(default_factory=dict)

    # ---- reading rows ----

    def manifest(self, row: sqlite3.Row) -> Manifest:
        """The row's manifest, parsed once per digest (a digest's manifest never changes)."""
        digest: str = row["digest"]
        cached = self._manifests.get(digest)
        if cached is None:
            cached = self._manifests[digest] = Manifest.model_validate_json(row["manifest"])
        return cached

    def record(self, row: sqlite3.Row) -> VersionRecord:
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

    def live(self, model: str | None = None) -> list[LiveVersion]:
        rows = self.tables.rows(State.LIVE, model)
        return [LiveVersion(row["model"], row["version"], self.manifest(row)) for row in rows]

    def versions_by_model(self, state: State) -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        for row in self.tables.rows(state):
            found.setdefault(row["model"], set()).add(row["version"])
        return found

    # ---- the repository's configs ----

    def write_model_config(self, model: str) -> None:
        """config.pbtxt (and labels.txt) for the live versions; none without a live version."""
        live = self.live(model)
        if not live:
            self.repository.remove_config(model)
            return
        newest = max(live, key=lambda item: item.version).manifest
        self.repository.write_config(
            model, live_config(model, live), newest.labels.names if newest.labels else None
        )

    # ---- rolling back ----

    def undo_pending(self, row: sqlite3.Row) -> None:
        """Remove what a pending push wrote, then its row (last: the row anchors the rest).

        The caller's session must own the row.
        """
        model, version = row["model"], row["version"]
        self.repository.remove_version(model, version)
        if row["prior_state"] is None:  # a re-pushed retired version keeps its package
            self.store.remove(row["digest"])
        with self.tables.transaction():
            self.tables.drop_pending(model, version, self.session.id)
        self.write_model_config(model)

    def recover(self) -> None:
        """Roll back the pushes of dead sessions and remove their files and orphaned blobs."""
        sessions.remove_dead(self.work_dir)
        for row in self.tables.rows(State.PENDING):
            owner = row["session"]
            if owner == self.session.id or (owner and sessions.is_alive(self.work_dir, owner)):
                continue
            # Claim it first: another process may be recovering the same row.
            if self.tables.take_over(row["model"], row["version"], owner, self.session.id):
                log.warning(
                    "rolling back the unfinished push of model %s version %s (its process died)",
                    row["model"],
                    row["version"],
                )
                self.undo_pending(row)
        self._remove_orphan_blobs()

    def _remove_orphan_blobs(self) -> None:
        # Listing before reading the rows: a blob is moved in only after its row exists.
        stored = self.store.digests()
        for digest in stored - self.tables.digests():
            log.warning("removing package %s, which no version refers to", digest)
            self.store.remove(digest)

    # ---- repair ----

    def repair(self) -> None:
        """Make the repository hold exactly the live versions (pending ones of live sessions stay)."""
        layout = self.repository.layout()  # before the rows, as for blobs
        live = self.versions_by_model(State.LIVE)
        pending = self.versions_by_model(State.PENDING)
        for model, versions in layout.items():
            for version in versions - live.get(model, set()) - pending.get(model, set()):
                self.repository.remove_version(model, version)
        for row in self.tables.rows(State.LIVE):
            if not self.repository.has_version(row["model"], row["version"]):
                self._rebuild_version(row)
        for model in set(layout) | set(live):
            self._sync_config(model)

    def _rebuild_version(self, row: sqlite3.Row) -> None:
        log.warning("rebuilding model %s version %s from its package", row["model"], row["version"])
        package = read_package(self.store.path(row["digest"]), self.limits)
        self.repository.install_version(row["model"], row["version"], package, self.session.folder)

    def _sync_config(self, model: str) -> None:
        before = self.repository.config_text(model)
        self.write_model_config(model)
        if before != self.repository.config_text(model):
            log.info("rewrote the repository configuration of model %s", model)


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def live_config(model: str, live: list[LiveVersion]) -> mc.ModelConfig:
    """The configuration serving ``live`` (not empty), described by the newest one's manifest."""
    newest = max(live, key=lambda item: item.version).manifest
    return model_config(model, newest, [item.version for item in live])
