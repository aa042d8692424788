"""Fixtures every test folder may use, and the e2e tier.

Tests that start real processes (inference servers, gateways, redis-server, pip, the CLI) are
marked ``e2e``: every test under ``tests/e2e`` and the modules that say ``pytestmark``.
``pytest -m "not e2e"`` is the fast in-process tier for day-to-day work; ``make test`` runs all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped after the test."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


# Fixtures that start a process: a test that uses one is e2e wherever it is.
PROCESS_FIXTURES = frozenset({"redis_server", "start_server", "server", "client", "server_address"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    e2e_folder = Path(__file__).parent / "e2e"
    for item in items:
        uses_process = PROCESS_FIXTURES & set(getattr(item, "fixturenames", ()))
        if e2e_folder in item.path.parents or uses_process:
            item.add_marker(pytest.mark.e2e)
