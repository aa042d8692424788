"""The registry: model versions, their packages, and what every backend should serve.

It is the gateway's :class:`~gateway.catalog.ModelCatalog` (an in-memory snapshot of the live
versions) and its control plane: push, delete, list, download, audit, reconcile.

**A push is atomic.** The version row in the database is the commit point, written in two
steps around everything that happens outside the database:

1. verify the upload completely (no lock held, in a worker thread);
2. *reserve*: insert the row as ``pending`` (this also reserves the version number against
   other gateway processes sharing the database);
3. *store*: move the upload into the package store under its digest (one rename);
4. *lay out*: rename the staged version folder into the Triton repository;
5. *deploy*: RepositoryModelLoad on every healthy backend, with every live version plus
   the new one (a backend that turns out unreachable is marked down and gets the version
   from the reconcile loop when it is back; one that refuses the model fails the push);
6. *commit*: one transaction turns the row ``live`` and appends the audit event.

An error in 3-6 undoes 5 (the backends get the previous set back), 4, 3, then deletes the
row, and the push fails. A crash leaves a pending row owned by a dead session: the next
registry to open or reconcile rolls it back the same way, and the reconcile loop unloads the
version from backends that loaded it. Clients never see a pending version: the catalog
holds live versions only. After the commit, config.pbtxt is rewritten; a crash before that
is repaired from the database.

**Deleting** retires a version (its package stays in the store, for download, audit, and a
later re-push that restores it). Which versions take traffic is the deployments' business
(``gateway.routing``), not the registry's: ``gateway.releases`` refuses to delete one in use
unless forced, and moves the traffic first.

Mutations and reconciles run one at a time in a process (one asyncio lock); across processes
the database's write lock and the session locks keep them apart. Of processes that manage the
same inference servers, only the leader (``gateway.leadership``) runs the reconcile loop; the
others re-read the live versions every ``deployment_refresh_s``, so they serve what the leader,
or a push through any process, made live.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import Conflict, Internal, NotFound
from core.tasks import cancelled
from gateway.backends import Backend, BackendPool
from gateway.catalog import ServedVersion
from gateway.db import ensure_schema
from gateway.leadership import Leadership, SoleProcess
from gateway.registry import audit, tables
from gateway.registry.admission import check_compatible, choose_version, verify_upload
from gateway.registry.audit import AuditEvent
from gateway.registry.backend_sync import Deployer
from gateway.registry.durable_state import RegistryStorage, live_config
from gateway.registry.package_store import PackageStore
from gateway.registry.records import ModelSummary, PushPhase, PushResult, PushStatus, VersionRecord
from gateway.registry.repository import TritonRepository
from gateway.registry.served import LiveVersion, Snapshot
from gateway.registry.sessions import Session
from gateway.registry.tables import State, Tables
from gateway.settings import GatewaySettings
from modelpkg import Limits, Package
from modelpkg.manifest import dump_manifest
from protos.generated import model_config_pb2 as mc

log = logging.getLogger(__name__)

PhaseObserver = Callable[[PushPhase], None]
WORK_FOLDER = "work"


def ignore_phase(phase: PushPhase) -> None:
    pass


class Registry:
    """The control plane's registry and the data plane's catalog; see the module docstring."""

    def __init__(self, settings: GatewaySettings, storage: RegistryStorage, pool: BackendPool) -> None:
        self.settings = settings
        self.storage = storage
        self.pool = pool
        self.deployer = Deployer(pool, storage)
        self._lock = asyncio.Lock()
        self._snapshot = Snapshot([])
        self._loop_task: asyncio.Task[None] | None = None
        self._leadership: Leadership = SoleProcess()

    @classmethod
    def open(cls, settings: GatewaySettings, connection: sqlite3.Connection, pool: BackendPool) -> Registry:
        """Open the registry in ``settings.data_dir``, rolling back what crashed pushes left."""
        ensure_schema(connection, tables.SCHEMA)
        ensure_schema(connection, audit.SCHEMA)
        work_dir = settings.data_dir / WORK_FOLDER
        storage = RegistryStorage(
            Tables(connection),
            PackageStore(settings.packages_dir),
            TritonRepository(settings.repository_dir),
            work_dir,
            Session.start(work_dir),
            Limits(max_package_bytes=settings.max_upload_bytes),
        )
        registry = cls(settings, storage, pool)
        try:
            storage.recover()
            storage.repair()
            registry._refresh()
        except BaseException:
            storage.session.close()
            raise
        return registry

    async def start(self, leadership: Leadership | None = None) -> None:
        """Reconcile now, whenever a backend comes up, and every ``reconcile_interval_s`` (while
        ``leadership`` says this process leads; re-read the live versions otherwise)."""
        self._leadership = leadership or SoleProcess()
        self.pool.on_backend_up(self._on_backend_up)
        self._loop_task = asyncio.create_task(self._reconcile_loop(), name="registry-reconcile")

    async def close(self) -> None:
        await cancelled(self._loop_task)
        self.storage.session.close()

    # ---- ModelCatalog ----

    def resolve(self, name: str, version: str | None) -> ServedVersion:
        return self._snapshot.resolve(name, version)

    def served_versions(self, name: str) -> list[ServedVersion]:
        served = self._snapshot.model(name)
        return [served.versions[number] for number in sorted(served.versions)]

    def model_names(self) -> list[str]:
        return list(self._snapshot.models)

    def is_loaded(self, name: str) -> bool:
        return name in self._snapshot.models

    # ---- push ----

    def new_upload_path(self) -> Path:
        """Where to write an upload: this process's session folder, swept if the process dies."""
        return self.storage.session.new_file(".upload")

    async def push(self, upload: Path, actor: str, *, observe: PhaseObserver = ignore_phase) -> PushResult:
        """Verify, store, lay out, deploy and register the package at ``upload`` (consumed)."""
        try:
            package = await asyncio.to_thread(verify_upload, upload, self.storage.limits)
            observe(PushPhase.VERIFIED)
            async with self._lock:
                return await self._register(package, upload, actor, observe)
        finally:
            _discard(upload)

    async def _register(
        self, package: Package, upload: Path, actor: str, observe: PhaseObserver
    ) -> PushResult:
        existing = self.storage.tables.by_digest(package.digest)
        if existing is not None and existing["state"] == State.LIVE:
            return PushResult(PushStatus.UNCHANGED, self.storage.record(existing))
        row = self._reserve(package, actor, _size(upload))
        observe(PushPhase.RESERVED)
        restored = row["prior_state"] is not None
        try:
            await self._install(package, upload, row, observe)
            self._commit(row, actor, restored)
        except BaseException:
            self.storage.undo_pending(row)
            raise
        observe(PushPhase.COMMITTED)
        self._refresh()
        self.storage.write_model_config(row["model"])
        record = self.storage.record(self._row(row["model"], row["version"]))
        result = PushResult(PushStatus.RESTORED if restored else PushStatus.CREATED, record)
        log.info("%s by %s", result.message, actor)
        return result

    def _check_contract(self, package: Package) -> None:
        name = package.manifest.name
        live = self.storage.live(name)
        if live:
            newest = max(live, key=lambda item: item.version)
            check_compatible(name, package.manifest, newest.manifest, newest.version)

    def _reserve(self, package: Package, actor: str, size: int) -> sqlite3.Row:
        """Insert the pending row (or reopen a retired one): the version number is ours."""
        manifest = package.manifest
        name, store = manifest.name, self.storage.tables
        session = self.storage.session.id
        with store.transaction():
            # Under the database's write lock: no other gateway process changes the model meanwhile.
            self._check_contract(package)
            existing = store.by_digest(package.digest)
            if existing is not None:
                version = existing["version"]
                if not store.reopen_retired(name, version, session):
                    raise Conflict(
                        f"package sha256:{package.digest} is being pushed by another request right now "
                        f"(model '{name}' version {version}); retry when it has finished"
                    )
            else:
                store.ensure_model(name, actor)
                version = choose_version(manifest.version, store.used_versions(name))
                store.insert_pending(
                    name,
                    version,
                    package_version=manifest.version,
                    digest=package.digest,
                    size=size,
                    manifest=dump_manifest(manifest).decode(),
                    session=session,
                    actor=actor,
                )
        return self._row(name, version)

    async def _install(
        self, package: Package, upload: Path, row: sqlite3.Row, observe: PhaseObserver
    ) -> None:
        model, version = row["model"], row["version"]
        await asyncio.to_thread(self.storage.store.put, upload, package.digest)
        observe(PushPhase.STORED)
        staging = self.storage.session.folder
        repository = self.storage.repository
        await asyncio.to_thread(repository.install_version, model, version, package, staging)
        observe(PushPhase.LAID_OUT)
        await self.deployer.roll_out(
            model, [*self.storage.live(model), LiveVersion(model, version, package.manifest)]
        )
        observe(PushPhase.DEPLOYED)

    def _commit(self, row: sqlite3.Row, actor: str, restored: bool) -> None:
        model, version = row["model"], row["version"]
        store = self.storage.tables
        with store.transaction() as connection:
            if not store.make_live(model, version, self.storage.session.id):
                raise Internal(f"the push of model '{model}' version {version} lost its reservation")
            audit.append(
                connection,
                AuditEvent(
                    actor=actor,
                    action="restore" if restored else "push",
                    model=model,
                    version=str(version),
                    from_value=f"version {version} (deleted)" if restored else None,
                    to_value=f"version {version}, sha256:{row['digest'][:12]}",
                    details={"digest": row["digest"], "package_version": row["package_version"]},
                ),
            )

    # ---- delete ----

    async def delete_version(
        self, name: str, version: int, actor: str, *, forced: bool = False, reason: str = ""
    ) -> VersionRecord:
        """Retire a live version: off the catalog, the backends and the repository. ``forced``
        only goes in the audit event (the caller checked that no traffic needs it, or moved it)."""
        async with self._lock:
            self._live_row(name, version)
            with self.storage.tables.transaction() as connection:
                if not self.storage.tables.retire(name, version, actor):  # another process was first
                    raise self._no_version(name, version)
                audit.append(
                    connection,
                    AuditEvent(
                        actor=actor,
                        action="delete",
                        model=name,
                        version=str(version),
                        from_value=f"version {version}",
                        to_value=State.RETIRED.value,
                        reason=reason,
                        details={"forced": forced},
                    ),
                )
            self._refresh()
            self.storage.repository.remove_version(name, version)
            self.storage.write_model_config(name)
            await self.deployer.apply_live(name, self.pool.healthy())
            log.info("model %s version %s deleted by %s", name, version, actor)
            return self.storage.record(self._row(name, version))

    async def unload_model(self, name: str, actor: str, *, reason: str) -> list[VersionRecord]:
        """Retire every live version of ``name`` (Triton's RepositoryModelUnload), each audited."""
        live = sorted(self._live_versions(name), reverse=True)
        if not live:
            raise self._no_model(name)
        return [await self.delete_version(name, v, actor, forced=True, reason=reason) for v in live]

    async def restorable_upload(self, name: str) -> Path | None:
        """For Triton's RepositoryModelLoad: a copy of ``name``'s newest deleted package, ready to
        push (an upload path); None when a version of it is loaded already."""
        if self._live_versions(name):
            return None
        retired = [r for r in self.model_summary(name).versions if r.state is State.RETIRED]
        if not retired:
            raise self._no_model(name)
        newest = max(retired, key=lambda record: record.version)
        upload = self.new_upload_path()
        await asyncio.to_thread(shutil.copyfile, self.package_path(name, newest.version), upload)
        return upload

    # ---- reading ----

    def models(self, *, include_retired: bool = False) -> list[ModelSummary]:
        """Every model with a live version (or any version, with ``include_retired``)."""
        shown = {State.LIVE, State.RETIRED} if include_retired else {State.LIVE}
        grouped: dict[str, list[VersionRecord]] = {}
        for row in self.storage.tables.rows():
            if row["state"] in shown:
                grouped.setdefault(row["model"], []).append(self.storage.record(row))
        return [ModelSummary(name, records) for name, records in sorted(grouped.items())]

    def model_summary(self, name: str) -> ModelSummary:
        """One model with all its versions, deleted ones included."""
        records = [
            self.storage.record(r)
            for r in self.storage.tables.rows(model=name)
            if r["state"] != State.PENDING
        ]
        if not records:
            raise self._no_model(name)
        return ModelSummary(name, records)

    def model_config(self, name: str) -> mc.ModelConfig:
        """The Triton configuration the backends serve ``name`` with (its live versions)."""
        live = self.storage.live(name)
        if not live:
            raise self._no_model(name)
        return live_config(name, live)

    def version_record(self, name: str, version: int) -> VersionRecord:
        """A live or deleted version, with its manifest."""
        row = self.storage.tables.row(name, version)
        if row is None or row["state"] == State.PENDING:
            raise self._no_version(name, version, live_only=False)
        return self.storage.record(row)

    def package_path(self, name: str, version: int) -> Path:
        """The stored package of a live or deleted version, for download."""
        record = self.version_record(name, version)
        path = self.storage.store.path(record.digest)
        if not path.is_file():
            raise Internal(f"the package of model '{name}' version {version} is missing from the store")
        return path

    def audit_events(
        self,
        *,
        model: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[AuditEvent]:
        db = self.storage.tables.db
        return audit.events(db, model=model, actor=actor, action=action, limit=limit, before=before)

    # ---- reconcile ----

    async def reconcile(self, backends: list[Backend] | None = None) -> None:
        """Clean up after dead processes, repair the repository, and make ``backends`` (default:
        every healthy one) serve exactly the live versions."""
        async with self._lock:
            self.storage.recover()
            self.storage.repair()
            self._refresh()
            targets = [b for b in (self.pool.healthy() if backends is None else backends) if b.healthy]
            await asyncio.gather(*(self.deployer.reconcile(b) for b in targets))

    async def _on_backend_up(self, backend: Backend) -> None:
        if self._leadership.is_leader:
            await self.reconcile([backend])

    async def _reconcile_loop(self) -> None:
        interval_s = self.settings.reconcile_interval_s
        tick_s = min(interval_s, self.settings.deployment_refresh_s)
        reconciled = -math.inf  # a process that comes to lead reconciles at once
        while True:
            try:
                if self._leadership.is_leader and time.monotonic() - reconciled >= interval_s:
                    reconciled = time.monotonic()
                    await self.reconcile()
                else:
                    self._refresh()  # what other processes made live (or retired) meanwhile
            except Exception:
                log.exception("reconcile (or re-reading the registry) failed; retrying in %s s", tick_s)
            await asyncio.sleep(tick_s)

    # ---- helpers ----

    def _refresh(self) -> None:
        self._snapshot = Snapshot(self.storage.live())

    def _row(self, name: str, version: int) -> sqlite3.Row:
        row = self.storage.tables.row(name, version)
        if row is None:
            raise self._no_version(name, version)
        return row

    def _live_row(self, name: str, version: int) -> sqlite3.Row:
        row = self.storage.tables.row(name, version)
        if row is None or row["state"] != State.LIVE:
            raise self._no_version(name, version)
        return row

    def _live_versions(self, name: str) -> set[int]:
        return self.storage.versions_by_model(State.LIVE).get(name, set())

    def _no_version(self, name: str, version: int, *, live_only: bool = True) -> NotFound:
        rows = [r for r in self.storage.tables.rows(model=name) if r["state"] != State.PENDING]
        if not rows:
            return self._no_model(name)
        listing = ", ".join(f"{r['version']} ({r['state']})" for r in rows)
        which = "live version" if live_only else "version"
        return NotFound(f"model '{name}' has no {which} {version}; versions: {listing}")

    def _no_model(self, name: str) -> NotFound:
        known = sorted({r["model"] for r in self.storage.tables.rows() if r["state"] != State.PENDING})
        return NotFound(f"there is no model '{name}'; models: {', '.join(known) or 'none yet'}")


def _size(path: Path) -> int:
    return path.stat().st_size


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
