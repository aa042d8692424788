"""The registry's tables (``registry_models``, ``registry_versions`` in
:mod:`gateway.database.schema`), and every statement on them.

A version row is the commit point of a push: it is inserted ``pending`` (reserving its
number across processes and hosts) before anything is written outside the database, and turns
``live`` only after the package is stored, laid out and loaded. ``session`` names the
process that owns a pending row (see :mod:`gateway.registry.sessions`); a pending row whose
session is dead is a crashed push and is rolled back.

Each function takes the SQLAlchemy connection of a transaction that
:class:`~gateway.database.engine.Database` runs, so a caller composes several into one
transaction; none of them awaits.
"""

from __future__ import annotations

import time
from enum import StrEnum

import sqlalchemy as sa

from gateway.database.schema import registry_models, registry_versions
from gateway.database.statements import insert_missing

Row = sa.RowMapping
_v = registry_versions.c


class State(StrEnum):
    PENDING = "pending"
    """A push in progress: invisible to clients, rolled back if its process dies."""
    LIVE = "live"
    """Served: the backends hold it and the catalog resolves it."""
    RETIRED = "retired"
    """Deleted: off the backends; its package stays in the store for download and audit."""


# ---- reads ----


def row(connection: sa.Connection, model: str, version: int) -> Row | None:
    query = sa.select(registry_versions).where(_v.model == model, _v.version == version)
    return connection.execute(query).mappings().one_or_none()


def by_digest(connection: sa.Connection, digest: str) -> Row | None:
    query = sa.select(registry_versions).where(_v.digest == digest)
    return connection.execute(query).mappings().one_or_none()


def rows(connection: sa.Connection, state: State | None = None, model: str | None = None) -> list[Row]:
    """Version rows ordered by model and version, optionally of one state or model."""
    query = sa.select(registry_versions).order_by(_v.model, _v.version)
    if state is not None:
        query = query.where(_v.state == state.value)
    if model is not None:
        query = query.where(_v.model == model)
    return list(connection.execute(query).mappings())


def used_versions(connection: sa.Connection, model: str) -> set[int]:
    return set(connection.scalars(sa.select(_v.version).where(_v.model == model)))


def model_names(connection: sa.Connection) -> list[str]:
    """Every model the registry ever managed, with or without live versions."""
    names = registry_models.c.name
    return list(connection.scalars(sa.select(names).order_by(names)))


def digests(connection: sa.Connection) -> set[str]:
    return set(connection.scalars(sa.select(_v.digest)))


# ---- writes ----


def ensure_model(connection: sa.Connection, name: str, actor: str) -> None:
    row = {"name": name, "created_at": time.time(), "created_by": actor}
    connection.execute(insert_missing(connection, registry_models, row, ["name"]))


def lock_model(connection: sa.Connection, name: str) -> None:
    """Hold the model's row until the transaction ends, so pushes of one model take their version
    numbers one at a time on PostgreSQL (SQLite's write lock does that already: no FOR UPDATE)."""
    names = registry_models.c.name
    connection.execute(sa.select(names).where(names == name).with_for_update())


def insert_pending(
    connection: sa.Connection,
    model: str,
    version: int,
    *,
    package_version: str,
    digest: str,
    size: int,
    manifest: str,
    session: str,
    actor: str,
) -> None:
    connection.execute(
        sa.insert(registry_versions).values(
            model=model,
            version=version,
            package_version=package_version,
            digest=digest,
            size=size,
            manifest=manifest,
            state=State.PENDING.value,
            session=session,
            pushed_by=actor,
            pushed_at=time.time(),
        )
    )


def _changed(connection: sa.Connection, statement: sa.Update) -> bool:
    return connection.execute(statement).rowcount == 1


def _version(model: str, version: int) -> sa.ColumnElement[bool]:
    return sa.and_(_v.model == model, _v.version == version)


def reopen_retired(connection: sa.Connection, model: str, version: int, session: str) -> bool:
    """A retired version becomes pending again (its package was pushed again)."""
    statement = (
        sa.update(registry_versions)
        .where(_version(model, version), _v.state == State.RETIRED.value)
        .values(state=State.PENDING.value, prior_state=State.RETIRED.value, session=session)
    )
    return _changed(connection, statement)


def make_live(connection: sa.Connection, model: str, version: int, session: str) -> bool:
    """Pending → live, only while ``session`` still owns the row."""
    statement = (
        sa.update(registry_versions)
        .where(_version(model, version), _v.state == State.PENDING.value, _v.session == session)
        .values(state=State.LIVE.value, prior_state=None, session=None, retired_by=None, retired_at=None)
    )
    return _changed(connection, statement)


def retire(connection: sa.Connection, model: str, version: int, actor: str) -> bool:
    statement = (
        sa.update(registry_versions)
        .where(_version(model, version), _v.state == State.LIVE.value)
        .values(state=State.RETIRED.value, retired_by=actor, retired_at=time.time())
    )
    return _changed(connection, statement)


def take_over(connection: sa.Connection, model: str, version: int, dead: str | None, session: str) -> bool:
    """Claim a dead session's pending row, so only one process rolls it back."""
    owner = _v.session.is_(None) if dead is None else _v.session == dead
    statement = (
        sa.update(registry_versions)
        .where(_version(model, version), _v.state == State.PENDING.value, owner)
        .values(session=session)
    )
    return _changed(connection, statement)


def drop_pending(connection: sa.Connection, model: str, version: int, session: str) -> None:
    """The last step of a rollback: a new row goes, a re-pushed one is retired again."""
    owned = sa.and_(_version(model, version), _v.state == State.PENDING.value, _v.session == session)
    connection.execute(
        sa.update(registry_versions)
        .where(owned, _v.prior_state == State.RETIRED.value)
        .values(state=State.RETIRED.value, prior_state=None, session=None)
    )
    connection.execute(sa.delete(registry_versions).where(owned))
