"""Fixtures every test folder may use, and the e2e tier.

Tests that start real processes (inference servers, gateways, redis-server, pip, the CLI) are
marked ``e2e``: every test under ``tests/e2e`` and the modules that say ``pytestmark``.
``pytest -m "not e2e"`` is the fast in-process tier for day-to-day work; ``make test`` runs all.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.database.engine import Database, PostgresDatabase, SQLiteDatabase
from gateway.db import open_database
from tests.registry.seaweedfs import BUCKET, SeaweedFS
from tests.services import PostgresServer, RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped after the test."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole run (initdb takes seconds); tests take a database each."""
    cluster = PostgresServer()
    cluster.start()
    yield cluster
    cluster.remove()


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_cluster: PostgresServer) -> str:
    """The URL of a new, empty PostgreSQL database for this test."""
    return postgres_cluster.create_database(f"test_{next(_databases)}")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty gateway database on each back end: the SQLite file, then a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real S3-compatible server and bucket for the whole run; tests take a prefix each (a
    bucket is a SeaweedFS collection with volumes of its own: a few dozen would fill a disk)."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)])
def gateway_database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Gateways, registries and key stores this test starts (in process or as child processes) keep
    their state in the data folder's SQLite, then in a real PostgreSQL (``MDEPLOY_DATABASE_URL``,
    as an operator sets it); the URL, None for SQLite."""
    if request.param == "sqlite":
        monkeypatch.delenv("MDEPLOY_DATABASE_URL", raising=False)
        return None
    url: str = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("MDEPLOY_DATABASE_URL", url)
    return url


async def open_any(url: str) -> Database:
    """The gateway database at ``url`` (``sqlite:///path`` or ``postgresql://``), migrated."""
    if url.startswith("sqlite:///"):
        return SQLiteDatabase.open(open_database(Path(url.removeprefix("sqlite:///"))))
    return await PostgresDatabase.open(url)


async def close_any(database: Database) -> None:
    await database.close()
    if isinstance(database, SQLiteDatabase):
        database.connection.close()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A new gateway database, migrated, on each back end (see ``database_url``)."""
    opened = await open_any(database_url)
    yield opened
    await close_any(opened)


# Fixtures that start a process: a test that uses one is e2e wherever it is.
PROCESS_FIXTURES = frozenset(
    {
        "redis_server",
        "start_server",
        "server",
        "client",
        "server_address",
        "postgres_cluster",
        "postgres_url",
        "seaweedfs",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    e2e_folder = Path(__file__).parent / "e2e"
    for item in items:
        uses_process = PROCESS_FIXTURES & set(getattr(item, "fixturenames", ()))
        if e2e_folder in item.path.parents or uses_process:
            item.add_marker(pytest.mark.e2e)
