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
import contextlib
import functools
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from core.errors import Conflict, Internal, NotFound
from core.tasks import cancelled
from gateway.backends import Backend, BackendPool
from gateway.catalog import ServedVersion
from gateway.database.engine import Database
from gateway.database.notifications import notify
from gateway.leadership import Leadership, SoleProcess
from gateway.registry import audit, tables
from gateway.registry.admission import check_compatible, choose_version, verify_upload
from gateway.registry.audit import AuditEvent
from gateway.registry.backend_sync import Deployer
from gateway.registry.blobs import BlobStore, FolderBlobStore
from gateway.registry.durable_state import RegistryStorage, live_config
from gateway.registry.records import ModelSummary, PushPhase, PushResult, PushStatus, VersionRecord
from gateway.registry.repository import TritonRepository
from gateway.registry.served import LiveVersion, Snapshot
from gateway.registry.sessions import LocalLiveness, Session, SessionLiveness
from gateway.registry.tables import Row, State
from gateway.settings import GatewaySettings
from modelpkg import Limits, Package
from modelpkg.manifest import dump_manifest
from protos.generated import model_config_pb2 as mc

log = logging.getLogger(__name__)

PhaseObserver = Callable[[PushPhase], None]
WORK_FOLDER = "work"
REGISTRY_CHANNEL = "mdeploy_registry"
"""Notified (with the model's name) when a version goes live or is deleted, so gateways on other
hosts re-read the live versions at once (PostgreSQL; SQLite's processes re-read every tick)."""


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
        self._refresh_now = asyncio.Event()

    @classmethod
    async def open(
        cls,
        settings: GatewaySettings,
        database: Database,
        pool: BackendPool,
        *,
        store: BlobStore | None = None,
        liveness: SessionLiveness | None = None,
    ) -> Registry:
        """Open the registry (its work folder and repository in ``settings.data_dir``; packages in
        ``store``, by default the data folder's), rolling back what crashed pushes left."""
        work_dir = settings.data_dir / WORK_FOLDER
        session = Session.start(work_dir)
        storage = RegistryStorage(
            database,
            store or FolderBlobStore(settings.packages_dir),
            TritonRepository(settings.repository_dir),
            work_dir,
            session,
            liveness or LocalLiveness(work_dir),
            Limits(max_package_bytes=settings.max_upload_bytes),
        )
        registry = cls(settings, storage, pool)
        try:
            await storage.liveness.hold(session.id)
            await storage.recover()
            await storage.repair()
            await registry._refresh()
        except BaseException:
            await storage.liveness.close()
            session.close()
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
        await self.storage.liveness.close()
        self.storage.session.close()

    @property
    def database(self) -> Database:
        return self.storage.database

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
        existing = await self.database.read(tables.by_digest, package.digest)
        if existing is not None and existing["state"] == State.LIVE:
            return PushResult(PushStatus.UNCHANGED, self.storage.record(existing))
        row = await self.database.run(self._reserve, package, actor, _size(upload))
        observe(PushPhase.RESERVED)
        restored = row["prior_state"] is not None
        try:
            await self._install(package, upload, row, observe)
            await self.database.run(self._commit, row, actor, restored)
        except BaseException:
            await self.storage.undo_pending(row)
            raise
        observe(PushPhase.COMMITTED)
        await self._refresh()
        await self.storage.write_model_config(row["model"])
        record = self.storage.record(await self._row(row["model"], row["version"]))
        result = PushResult(PushStatus.RESTORED if restored else PushStatus.CREATED, record)
        log.info("%s by %s", result.message, actor)
        return result

    def _reserve(self, connection: sa.Connection, package: Package, actor: str, size: int) -> Row:
        """Insert the pending row (or reopen a retired one): the version number is ours."""
        manifest = package.manifest
        name, session = manifest.name, self.storage.session.id
        tables.ensure_model(connection, name, actor)
        tables.lock_model(connection, name)
        # No other gateway process (on any host) changes the model's versions until the commit.
        live = [self.storage.live_version(row) for row in tables.rows(connection, State.LIVE, name)]
        if live:
            newest = max(live, key=lambda item: item.version)
            check_compatible(name, manifest, newest.manifest, newest.version)
        existing = tables.by_digest(connection, package.digest)
        if existing is not None:
            version = existing["version"]
            if not tables.reopen_retired(connection, name, version, session):
                raise Conflict(
                    f"package sha256:{package.digest} is being pushed by another request right now "
                    f"(model '{name}' version {version}); retry when it has finished"
                )
        else:
            version = choose_version(manifest.version, tables.used_versions(connection, name))
            tables.insert_pending(
                connection,
                name,
                version,
                package_version=manifest.version,
                digest=package.digest,
                size=size,
                manifest=dump_manifest(manifest).decode(),
                session=session,
                actor=actor,
            )
        row = tables.row(connection, name, version)
        assert row is not None
        return row

    async def _install(self, package: Package, upload: Path, row: Row, observe: PhaseObserver) -> None:
        model, version = row["model"], row["version"]
        await self.storage.store.put(upload, package.digest)
        observe(PushPhase.STORED)
        staging = self.storage.session.folder
        repository = self.storage.repository
        await asyncio.to_thread(repository.install_version, model, version, package, staging)
        observe(PushPhase.LAID_OUT)
        pushed = LiveVersion(model, version, package.manifest, package.digest)
        await self.deployer.roll_out(model, [*await self.storage.live(model), pushed])
        observe(PushPhase.DEPLOYED)

    def _commit(self, connection: sa.Connection, row: Row, actor: str, restored: bool) -> None:
        model, version = row["model"], row["version"]
        if not tables.make_live(connection, model, version, self.storage.session.id):
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
        notify(connection, REGISTRY_CHANNEL, model)

    # ---- delete ----

    async def delete_version(
        self, name: str, version: int, actor: str, *, forced: bool = False, reason: str = ""
    ) -> VersionRecord:
        """Retire a live version: off the catalog, the backends and the repository. ``forced``
        only goes in the audit event (the caller checked that no traffic needs it, or moved it)."""
        async with self._lock:
            await self._live_row(name, version)
            retired = await self.database.run(self._retire, name, version, actor, forced, reason)
            if not retired:  # another process was first
                raise await self._no_version(name, version)
            await self._refresh()
            self.storage.repository.remove_version(name, version)
            await self.storage.write_model_config(name)
            await self.deployer.apply_live(name, self.pool.healthy())
            log.info("model %s version %s deleted by %s", name, version, actor)
            return self.storage.record(await self._row(name, version))

    @staticmethod
    def _retire(
        connection: sa.Connection, name: str, version: int, actor: str, forced: bool, reason: str
    ) -> bool:
        if not tables.retire(connection, name, version, actor):
            return False
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
        notify(connection, REGISTRY_CHANNEL, name)
        return True

    async def unload_model(self, name: str, actor: str, *, reason: str) -> list[VersionRecord]:
        """Retire every live version of ``name`` (Triton's RepositoryModelUnload), each audited."""
        live = sorted(await self._live_versions(name), reverse=True)
        if not live:
            raise await self._no_model(name)
        return [await self.delete_version(name, v, actor, forced=True, reason=reason) for v in live]

    async def restorable_upload(self, name: str) -> Path | None:
        """For Triton's RepositoryModelLoad: a copy of ``name``'s newest deleted package, ready to
        push (an upload path); None when a version of it is loaded already."""
        if await self._live_versions(name):
            return None
        retired = [r for r in (await self.model_summary(name)).versions if r.state is State.RETIRED]
        if not retired:
            raise await self._no_model(name)
        newest = max(retired, key=lambda record: record.version)
        upload = self.new_upload_path()
        await asyncio.to_thread(shutil.copyfile, await self.package_path(name, newest.version), upload)
        return upload

    # ---- reading ----

    async def models(self, *, include_retired: bool = False) -> list[ModelSummary]:
        """Every model with a live version (or any version, with ``include_retired``)."""
        shown = {State.LIVE, State.RETIRED} if include_retired else {State.LIVE}
        grouped: dict[str, list[VersionRecord]] = {}
        for row in await self.storage.rows():
            if row["state"] in shown:
                grouped.setdefault(row["model"], []).append(self.storage.record(row))
        return [ModelSummary(name, records) for name, records in sorted(grouped.items())]

    async def model_summary(self, name: str) -> ModelSummary:
        """One model with all its versions, deleted ones included."""
        rows = await self.storage.rows(model=name)
        records = [self.storage.record(r) for r in rows if r["state"] != State.PENDING]
        if not records:
            raise await self._no_model(name)
        return ModelSummary(name, records)

    async def model_config(self, name: str) -> mc.ModelConfig:
        """The Triton configuration the backends serve ``name`` with (its live versions)."""
        live = await self.storage.live(name)
        if not live:
            raise await self._no_model(name)
        return live_config(name, live)

    async def version_record(self, name: str, version: int) -> VersionRecord:
        """A live or deleted version, with its manifest."""
        row = await self.storage.row(name, version)
        if row is None or row["state"] == State.PENDING:
            raise await self._no_version(name, version, live_only=False)
        return self.storage.record(row)

    async def package_path(self, name: str, version: int) -> Path:
        """A local file of the stored package of a live or deleted version, for download."""
        record = await self.version_record(name, version)
        if not await self.storage.store.contains(record.digest):
            raise Internal(f"the package of model '{name}' version {version} is missing from the store")
        return await self.storage.store.local_path(record.digest)

    async def audit_events(
        self,
        *,
        model: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[AuditEvent]:
        query = functools.partial(
            audit.events, model=model, actor=actor, action=action, limit=limit, before=before
        )
        return await self.database.read(query)

    # ---- reconcile ----

    async def reconcile(self, backends: list[Backend] | None = None) -> None:
        """Clean up after dead processes, repair the repository, and make ``backends`` (default:
        every healthy one) serve exactly the live versions."""
        async with self._lock:
            await self.storage.recover()
            await self.storage.repair()
            await self._refresh()
            targets = [b for b in (self.pool.healthy() if backends is None else backends) if b.healthy]
            await asyncio.gather(*(self.deployer.reconcile(b) for b in targets))

    async def _on_backend_up(self, backend: Backend) -> None:
        if self._leadership.is_leader:
            await self.reconcile([backend])

    def changed_elsewhere(self, model: str) -> None:
        """A notification that another process changed ``model``'s versions: re-read them now
        rather than at the next tick (any payload: the whole snapshot is read again)."""
        self._refresh_now.set()

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
                    await self._refresh()  # what other processes made live (or retired) meanwhile
            except Exception:
                log.exception("reconcile (or re-reading the registry) failed; retrying in %s s", tick_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_now.wait(), tick_s)
            self._refresh_now.clear()

    # ---- helpers ----

    async def _refresh(self) -> None:
        self._snapshot = Snapshot(await self.storage.live())

    async def _row(self, name: str, version: int) -> Row:
        row = await self.storage.row(name, version)
        if row is None:
            raise await self._no_version(name, version)
        return row

    async def _live_row(self, name: str, version: int) -> Row:
        row = await self.storage.row(name, version)
        if row is None or row["state"] != State.LIVE:
            raise await self._no_version(name, version)
        return row

    async def _live_versions(self, name: str) -> set[int]:
        return (await self.storage.versions_by_model(State.LIVE)).get(name, set())

    async def _no_version(self, name: str, version: int, *, live_only: bool = True) -> NotFound:
        rows = [r for r in await self.storage.rows(model=name) if r["state"] != State.PENDING]
        if not rows:
            return await self._no_model(name)
        listing = ", ".join(f"{r['version']} ({r['state']})" for r in rows)
        which = "live version" if live_only else "version"
        return NotFound(f"model '{name}' has no {which} {version}; versions: {listing}")

    async def _no_model(self, name: str) -> NotFound:
        known = sorted({r["model"] for r in await self.storage.rows() if r["state"] != State.PENDING})
        return NotFound(f"there is no model '{name}'; models: {', '.join(known) or 'none yet'}")


def _size(path: Path) -> int:
    return path.stat().st_size


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)
