"""Package blobs: every pushed package, byte for byte, named by its sha256, in a store that one
host (:class:`FolderBlobStore`) or every gateway host (:class:`DatabaseBlobStore`, or
:class:`~gateway.registry.s3_blobs.S3BlobStore`) can read.

Content addressing keeps every store simple: the same digest is the same bytes, so a put is
idempotent, two hosts putting one digest at once write the same thing, and any copy can be
checked against its name. A reader never takes a partial blob as complete: the folder store
moves a whole file in with one rename; the database store writes a header row last; an S3
object appears only when its multipart upload completes. Bytes fetched from elsewhere are
checked against the digest.

The registry keeps what it serves in a Triton repository on local disk, so a store hands out
blobs as local files (:meth:`BlobStore.local_path`): the file itself where the store is a
folder, else a copy in the host's :class:`BlobCache`, fetched and verified by its first reader.

How an object store implements the interface (``s3_blobs.py`` does, for any S3-compatible
server: AWS S3, MinIO, SeaweedFS, Ceph RGW, R2):

* ``put``: ``HeadObject`` on ``<prefix><digest>.pkg`` first (present: done); else a multipart
  upload keyed by the digest, parts read from disk a few at a time (memory stays bounded; at
  most 10,000 parts, so the part size grows with the file), each with its sha256 checked by the
  server, and ``CompleteMultipartUpload`` last: the object appears whole or not at all, and two
  hosts completing the same key leave the same bytes. A failed upload is aborted; a bucket
  lifecycle rule that aborts incomplete uploads after a day covers processes that die mid-way.
  The source then becomes the host's cached copy.
* ``local_path``: ``GetObject`` streamed through :meth:`BlobCache.fill` (a temporary file in
  the cache folder, hashed as it streams, renamed into place only if the sha256 matches; one
  fetch per digest in a process).
* ``remove``: ``DeleteObject`` and the cached copy; ``digests``: ``ListObjectsV2`` under the
  prefix; ``contains``: ``HeadObject``.

Every store keeps the layout of the registry's old ``PackageStore``, ``<digest>.pkg`` files, so
a packages folder written by it is a :class:`FolderBlobStore` as it is.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa

from core.errors import Internal, NotFound
from gateway.database.engine import Database
from gateway.database.schema import package_blobs
from gateway.database.statements import insert_missing, upsert_many

MiB = 1024 * 1024
SUFFIX = ".pkg"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_PARTIAL = ".part"


class BlobMissing(NotFound):
    """The store holds no complete blob of that digest."""


class BlobCorrupt(Internal):
    """Stored bytes that do not hash to their digest (or a blob changed while it was written)."""


class BlobStore(Protocol):
    """Where the registry keeps package files, named by their sha256 (lowercase hex)."""

    @property
    def name(self) -> str:
        """The kind of store, for logs and metrics: ``folder``, ``database``, ``s3``."""
        ...

    @property
    def description(self) -> str:
        """The kind and where it keeps blobs, for logs."""
        ...

    async def put(self, source: Path, digest: str) -> None:
        """Store the file at ``source`` as ``digest`` (the caller has checked that it hashes to
        it). Idempotent: a complete blob already stored is kept as it is. On success ``source``
        is gone (moved into the store or its cache, or deleted); on failure it is left as it was."""
        ...

    async def local_path(self, digest: str) -> Path:
        """A complete local file of the blob, verified against ``digest`` if it came from
        elsewhere; BlobMissing if the store holds none, BlobCorrupt if its bytes are damaged.
        The caller reads it and must not change or move it."""
        ...

    async def remove(self, digest: str) -> None:
        """Forget ``digest`` (and this host's cached copy); nothing if it is not stored."""
        ...

    async def digests(self) -> set[str]:
        """Every digest with anything stored, complete or not (a put under way, or one whose
        process died): what the registry collects garbage from."""
        ...

    async def contains(self, digest: str) -> bool:
        """Whether a complete blob of ``digest`` is stored."""
        ...


def check_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename into it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_in(source: Path, target: Path, *, durable: bool) -> None:
    """Move ``source`` to ``target`` whole, with its bytes on disk before the rename (a cached
    or stored file is trusted as verified, so it must not come back torn after a power cut);
    ``durable`` also syncs the folder so the rename itself survives. Another file system:
    copied next to ``target`` first, then ``source`` deleted."""
    with open(source, "rb") as stream:
        os.fsync(stream.fileno())
    try:
        os.replace(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        staged = _partial_path(target.parent, target.stem)
        try:
            with open(source, "rb") as stream, open(staged, "wb") as copy:
                shutil.copyfileobj(stream, copy, MiB)
                copy.flush()
                os.fsync(copy.fileno())
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
        source.unlink()
    if durable:
        sync_folder(target.parent)


def _partial_path(folder: Path, digest: str) -> Path:
    # Hidden and never named <digest>.pkg: listings and readers skip it.
    return folder / f".{digest}.{secrets.token_hex(6)}{_PARTIAL}"


def _stored_digests(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob(f"*{SUFFIX}") if _DIGEST.match(p.stem)}


class FolderBlobStore:
    """Blobs as ``<root>/<digest>.pkg`` files on this host (the embedded, one-host default)."""

    name = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @property
    def description(self) -> str:
        return f"folder {self.root}"

    def path(self, digest: str) -> Path:
        return self.root / f"{check_digest(digest)}{SUFFIX}"

    async def put(self, source: Path, digest: str) -> None:
        await asyncio.to_thread(self._put, source, self.path(digest))

    @staticmethod
    def _put(source: Path, target: Path) -> None:
        if target.exists():
            source.unlink(missing_ok=True)
            return
        move_in(source, target, durable=True)

    async def local_path(self, digest: str) -> Path:
        path = self.path(digest)
        if not path.is_file():
            raise BlobMissing(f"package {digest} is not in the {self.description}")
        return path

    async def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    async def digests(self) -> set[str]:
        return await asyncio.to_thread(_stored_digests, self.root)

    async def contains(self, digest: str) -> bool:
        return self.path(digest).is_file()


class Sink:
    """Where a download writes its pieces, in order: hashed and written to the partial file
    (called from one thread at a time)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._hasher = hashlib.sha256()
        self.size = 0

    def write(self, piece: bytes) -> None:
        self._hasher.update(piece)
        self._out.write(piece)
        self.size += len(piece)

    def write_all(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.write(piece)

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


class BlobCache:
    """This host's copies of blobs stored elsewhere (the database, a bucket), as
    ``<folder>/<digest>.pkg``. Each is renamed into place only once its bytes hash to its name,
    so a file there is complete and right; concurrent readers in a process share one fetch."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._fetches: dict[str, asyncio.Task[Path]] = {}

    def path(self, digest: str) -> Path:
        return self.folder / f"{check_digest(digest)}{SUFFIX}"

    async def once(self, digest: str, fetch: Callable[[], Awaitable[Path]]) -> Path:
        """``fetch()``, shared by every caller for ``digest`` until it ends (a caller's
        cancellation does not stop it for the others)."""
        task = self._fetches.get(digest)
        if task is None:
            task = asyncio.ensure_future(fetch())
            self._fetches[digest] = task
            task.add_done_callback(partial(self._fetched, digest))
        return await asyncio.shield(task)

    def _fetched(self, digest: str, task: asyncio.Task[Path]) -> None:
        if self._fetches.get(digest) is task:
            del self._fetches[digest]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    def fresh(self, digest: str, size: int) -> Path | None:
        """The cached copy if there is one of ``size`` bytes (the store's size of the blob)."""
        path = self.path(digest)
        with suppress(FileNotFoundError):
            if path.stat().st_size == size:
                return path
        return None

    async def fill(
        self, digest: str, size: int, download: Callable[[Sink], Awaitable[None]], origin: str
    ) -> Path:
        """``download(sink)`` into a partial file, then renamed into place if it is ``size``
        bytes hashing to ``digest``; BlobCorrupt (and nothing left behind) if not."""
        partial_file = _partial_path(self.folder, digest)
        try:
            out = await asyncio.to_thread(partial_file.open, "wb")
            with out:
                sink = Sink(out)
                await download(sink)
                if sink.size != size or sink.hexdigest() != digest:
                    raise BlobCorrupt(
                        f"package {digest} read from the {origin} does not match its sha256 "
                        f"({sink.size} bytes hashing to {sink.hexdigest()}, where {size} bytes were "
                        "stored): the stored copy is damaged; remove the version and push the package again"
                    )
                await asyncio.to_thread(os.fsync, out.fileno())
            cached = self.path(digest)
            os.replace(partial_file, cached)
            return cached
        finally:
            partial_file.unlink(missing_ok=True)

    def keep(self, source: Path, digest: str) -> None:
        """Move a verified ``source`` in (a host need not fetch back what it just stored), or
        delete it where that fails: it is only a cache."""
        cached = self.path(digest)
        if cached.exists():
            source.unlink(missing_ok=True)
            return
        try:
            move_in(source, cached, durable=False)
        except OSError:
            source.unlink(missing_ok=True)

    def drop(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def prune(self, stored: set[str]) -> None:
        """Drop the copies of blobs no longer ``stored`` (removed through another host)."""
        for digest in _stored_digests(self.folder) - stored:
            self.drop(digest)


# ---- the database store ----

HEADER_CHUNK = -1
"""The chunk number of a blob's header row: written last, so its presence means complete."""


@dataclass(frozen=True)
class _Header:
    size: int
    chunks: int

    def encode(self) -> bytes:
        return json.dumps({"size": self.size, "chunks": self.chunks}).encode()

    @classmethod
    def decode(cls, data: bytes) -> _Header:
        fields = json.loads(data)
        return cls(size=int(fields["size"]), chunks=int(fields["chunks"]))


class DatabaseBlobStore:
    """Blobs as rows of ``package_blobs`` in the gateway database, which every gateway host
    shares on PostgreSQL; each host keeps verified copies in ``cache_dir``.

    A blob is rows 0, 1, ... of ``chunk_size`` bytes (the last one shorter) and a header row
    (chunk -1: size and chunk count) written after them. The chunks go in several transactions
    of ``batch_bytes`` (memory stays bounded, and SQLite, whose statements run on the event
    loop, lets other work run between them); the header goes in a last one that first checks
    that every chunk is there. Two hosts putting one digest at once write the same bytes to the
    same rows until one of them completes it (the other stops there). A put that died mid-way
    leaves chunks without a header: not complete, overwritten by the next put of that digest,
    and listed by :meth:`digests` so that the registry removes it.

    ``chunk_size`` must be the same on every host that writes (a reader takes any).
    """

    name = "database"

    def __init__(
        self, database: Database, cache_dir: Path, *, chunk_size: int = MiB, batch_bytes: int = 8 * MiB
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        self.database = database
        self.cache = BlobCache(cache_dir)
        self.chunk_size = chunk_size
        self._batch = max(1, batch_bytes // chunk_size)

    @property
    def description(self) -> str:
        return f"{self.database.backend} database (cached in {self.cache.folder})"

    async def contains(self, digest: str) -> bool:
        return await self.database.read(_header, check_digest(digest)) is not None

    async def put(self, source: Path, digest: str) -> None:
        if not await self.contains(digest):
            await self._write(source, digest)
        await asyncio.to_thread(self.cache.keep, source, digest)

    async def _write(self, source: Path, digest: str) -> None:
        hasher = hashlib.sha256()
        size = chunks = 0
        stream = await asyncio.to_thread(source.open, "rb")
        with stream:
            read = partial(_read_chunks, stream, hasher, self.chunk_size, self._batch)
            # The next batch is read (and hashed) in a thread while this one is written.
            reading = asyncio.ensure_future(asyncio.to_thread(read))
            try:
                while batch := await reading:
                    reading = asyncio.ensure_future(asyncio.to_thread(read))
                    if not await self.database.run(_write_chunks, digest, chunks, batch):
                        return  # another host completed it meanwhile
                    chunks += len(batch)
                    size += sum(len(chunk) for chunk in batch)
            finally:
                await _settle(reading)  # it reads the stream: done before the stream closes
        if hasher.hexdigest() != digest:
            # The chunks stay without a header: never read, overwritten or removed later.
            raise BlobCorrupt(f"{source} hashes to {hasher.hexdigest()}, not to {digest}: not stored")
        await self.database.run(_complete, digest, _Header(size, chunks))

    async def local_path(self, digest: str) -> Path:
        return await self.cache.once(check_digest(digest), partial(self._fetch, digest))

    async def _fetch(self, digest: str) -> Path:
        header = await self.database.read(_header, digest)
        if header is None:
            self.cache.drop(digest)  # removed through another host
            raise BlobMissing(f"package {digest} is not in the {self.description}")
        cached = self.cache.fresh(digest, header.size)
        if cached is not None:
            return cached
        download = partial(self._download, digest, header)
        return await self.cache.fill(digest, header.size, download, f"{self.database.backend} database")

    async def _download(self, digest: str, header: _Header, sink: Sink) -> None:
        def fetch(start: int) -> asyncio.Future[list[tuple[int, bytes]]] | None:
            if start >= header.chunks:
                return None
            stop = min(start + self._batch, header.chunks)
            return asyncio.ensure_future(self.database.read(_chunks, digest, start, stop))

        # The next batch is read from the database while this one is hashed and written.
        pending = fetch(0)
        try:
            for start in range(0, header.chunks, self._batch):
                assert pending is not None
                rows = await pending
                pending = fetch(start + self._batch)
                wanted = range(start, min(start + self._batch, header.chunks))
                if [number for number, _ in rows] != list(wanted):
                    await self._missing_chunk(digest, min(set(wanted) - {number for number, _ in rows}))
                await asyncio.to_thread(sink.write_all, [data for _, data in rows])
        finally:
            await _settle(pending)

    async def _missing_chunk(self, digest: str, number: int) -> None:
        if await self.database.read(_header, digest) is None:
            raise BlobMissing(f"package {digest} was removed from the {self.description} while read")
        raise BlobCorrupt(
            f"chunk {number} of package {digest} is missing from the {self.database.backend} database: "
            "the stored copy is damaged; remove the version and push the package again"
        )

    async def remove(self, digest: str) -> None:
        # The header first, so no reader takes the rest as complete; the chunks in bounded
        # transactions (a 1 GiB DELETE would hold SQLite's write lock and the event loop).
        await self.database.run(_drop_header, check_digest(digest))
        while await self.database.run(_drop_chunks, digest, self._batch * 4):
            pass
        self.cache.drop(digest)

    async def digests(self) -> set[str]:
        """Also drops cached copies of blobs no longer stored (removed through another host):
        the registry lists the store on every reconcile tick."""
        stored = set(await self.database.read(_digests))
        self.cache.prune(stored)
        return stored


async def _settle(future: asyncio.Future[Any] | None) -> None:
    """Wait for a read ahead that is no longer wanted, dropping its result or error: it may
    hold the file being closed, or a database connection."""
    if future is None:
        return
    await asyncio.wait({future})
    if not future.cancelled():
        future.exception()


def _read_chunks(stream: IO[bytes], hasher: Any, chunk_size: int, count: int) -> list[bytes]:
    batch: list[bytes] = []
    while len(batch) < count and (chunk := stream.read(chunk_size)):
        hasher.update(chunk)
        batch.append(chunk)
    return batch


# ---- statements (each runs in one transaction of Database.run or Database.read) ----


def _header(connection: sa.Connection, digest: str) -> _Header | None:
    data = connection.execute(
        sa.select(package_blobs.c.data).where(
            package_blobs.c.digest == digest, package_blobs.c.chunk == HEADER_CHUNK
        )
    ).scalar_one_or_none()
    return None if data is None else _Header.decode(data)


def _chunks(connection: sa.Connection, digest: str, start: int, stop: int) -> list[tuple[int, bytes]]:
    rows = connection.execute(
        sa.select(package_blobs.c.chunk, package_blobs.c.data)
        .where(package_blobs.c.digest == digest, package_blobs.c.chunk >= start, package_blobs.c.chunk < stop)
        .order_by(package_blobs.c.chunk)
    )
    return [(number, data) for number, data in rows]


def _write_chunks(connection: sa.Connection, digest: str, first: int, chunks: list[bytes]) -> bool:
    """Write the chunks unless the blob is complete (then False: nothing more to write)."""
    if _header(connection, digest) is not None:
        return False
    rows = [{"digest": digest, "chunk": first + i, "data": data} for i, data in enumerate(chunks)]
    upsert_many(connection, package_blobs, rows, ("digest", "chunk"))
    return True


def _complete(connection: sa.Connection, digest: str, header: _Header) -> None:
    if _header(connection, digest) is not None:
        return  # another host completed it first, with the same bytes
    table = package_blobs
    mine = table.c.digest == digest
    connection.execute(sa.delete(table).where(mine, table.c.chunk >= header.chunks))  # a longer leftover
    count, size = connection.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(table.c.data)), 0)).where(
            mine, table.c.chunk >= 0
        )
    ).one()
    if (count, size) != (header.chunks, header.size):
        raise BlobCorrupt(
            f"package {digest} changed while being stored ({count} chunks of {size} bytes, not "
            f"{header.chunks} of {header.size}): removed meanwhile? push it again"
        )
    row = {"digest": digest, "chunk": HEADER_CHUNK, "data": header.encode()}
    connection.execute(insert_missing(connection, table, row, ("digest", "chunk")))  # or a racing host's


def _drop_header(connection: sa.Connection, digest: str) -> None:
    table = package_blobs
    connection.execute(sa.delete(table).where(table.c.digest == digest, table.c.chunk == HEADER_CHUNK))


def _drop_chunks(connection: sa.Connection, digest: str, limit: int) -> int:
    """Delete up to ``limit`` of ``digest``'s rows; how many went."""
    table = package_blobs
    some = sa.select(table.c.chunk).where(table.c.digest == digest).order_by(table.c.chunk).limit(limit)
    result = connection.execute(sa.delete(table).where(table.c.digest == digest, table.c.chunk.in_(some)))
    return int(result.rowcount)


_DISTINCT_DIGESTS = sa.text(
    # A loose index scan: one index seek per digest, not one step per chunk row.
    f"""
    WITH RECURSIVE stored(digest) AS (
        SELECT min(digest) FROM {package_blobs.name}
        UNION ALL
        SELECT (SELECT min(digest) FROM {package_blobs.name} WHERE digest > stored.digest)
        FROM stored WHERE stored.digest IS NOT NULL
    )
    SELECT digest FROM stored WHERE digest IS NOT NULL
    """
)


def _digests(connection: sa.Connection) -> list[str]:
    return [digest for (digest,) in connection.execute(_DISTINCT_DIGESTS)]
