"""Helpers of the advisory-lock tests: who holds a key, cutting backends off, a network that hangs."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url

from gateway.database.advisory import asyncpg_dsn

# The pid of each backend of the current database holding the advisory key $1 (bigint form).
_HOLDERS = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1 AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((classid::bigint << 32) | objid::bigint) = $1
"""


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = 10.0) -> float:
    """Wait for ``condition`` (sync or async); the seconds it took. Fails after ``timeout_s``."""
    start = time.monotonic()
    while True:
        outcome = condition()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


async def holds_throughout(condition: Callable[[], bool], what: str, duration_s: float) -> None:
    """Fail as soon as ``condition`` is false during ``duration_s`` (an invariant, not a wait)."""
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        assert condition(), what
        await asyncio.sleep(0.01)


class Admin:
    """A superuser's view of the test database: its advisory locks, its backends."""

    def __init__(self, url: str, cluster_url: str) -> None:
        self.url = url
        self.database = make_url(url).database
        self._cluster_dsn = asyncpg_dsn(cluster_url)

    async def holders(self, key: int) -> list[int]:
        connection = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            return [row["pid"] for row in await connection.fetch(_HOLDERS, key)]
        finally:
            await connection.close()

    async def holder(self, key: int) -> int | None:
        holders = await self.holders(key)
        assert len(holders) <= 1, f"several backends hold {key}: {holders}"
        return holders[0] if holders else None

    async def terminate(self, pid: int) -> None:
        """Ends the backend as an operator or a failover of PostgreSQL would."""
        connection = await asyncpg.connect(self._cluster_dsn)
        try:
            assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await connection.close()

    async def terminate_all(self) -> None:
        """Ends every backend of the test database, as a restart of PostgreSQL would."""
        connection = await asyncpg.connect(self._cluster_dsn)
        try:
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                self.database,
            )
        finally:
            await connection.close()

    @asynccontextmanager
    async def refusing_connections(self) -> AsyncIterator[None]:
        """New connections to the database fail (PostgreSQL unreachable); open ones stay."""
        connection = await asyncpg.connect(self._cluster_dsn)
        try:
            await connection.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false')
            yield
        finally:
            await connection.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')
            await connection.close()


class HangingProxy:
    """A TCP proxy to PostgreSQL on 127.0.0.1 whose traffic can stop without any error, as on a
    network that hangs: neither side sees a close, queries just get no answer."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._upstreams: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, url: str) -> str:
        """``url`` through this proxy."""
        return make_url(url).set(port=self.port).render_as_string(hide_password=False)

    def hang(self) -> None:
        self._flowing.clear()

    def drop_upstream(self) -> None:
        """Close the server's side, as PostgreSQL does when TCP keepalive gives up on a client."""
        for writer in self._upstreams:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._upstreams.append(server_writer)
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            pump = asyncio.create_task(self._pump(reader, writer))
            self._pumps.add(pump)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
