"""Package blob stores: a folder on one host; the gateway database (SQLite, and a real
PostgreSQL that several gateway hosts share) and an S3 bucket (a real SeaweedFS), each handing
out verified local files."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from core.errors import Unavailable
from gateway.database.engine import Backend, Database
from gateway.database.schema import package_blobs
from gateway.registry.blobs import (
    BlobCorrupt,
    BlobMissing,
    BlobStore,
    DatabaseBlobStore,
    FolderBlobStore,
    MiB,
)
from gateway.registry.s3_blobs import S3BlobStore
from tests.conftest import close_any, open_any
from tests.registry.seaweedfs import BUCKET, READER_KEY, READER_SECRET, SeaweedFS

T = TypeVar("T")
KiB = 1024
CHUNK = 64 * KiB  # small chunks: a few MiB make dozens of rows and several batches
BATCH = 4 * CHUNK


def database_store(database: Database, cache: Path) -> DatabaseBlobStore:
    return DatabaseBlobStore(database, cache, chunk_size=CHUNK, batch_bytes=BATCH)


_prefixes = itertools.count(1)


@pytest.fixture
def prefix(seaweedfs: SeaweedFS) -> str:
    """Where this test's objects go in the bucket, empty."""
    return f"test-{next(_prefixes)}/"


def s3_store(seaweedfs: SeaweedFS, prefix: str, cache: Path) -> S3BlobStore:
    return S3BlobStore(seaweedfs.client(), BUCKET, cache, prefix=prefix, part_size=5 * MiB)  # S3's least


@pytest.fixture(
    params=[
        "folder",
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.e2e),
        pytest.param("s3", marks=pytest.mark.e2e),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """Each kind of store, empty: the folder, the database on both back ends, a bucket."""
    if request.param == "folder":
        yield FolderBlobStore(tmp_path / "packages")
        return
    if request.param == "s3":
        server, prefix = request.getfixturevalue("seaweedfs"), request.getfixturevalue("prefix")
        yield s3_store(server, prefix, tmp_path / "cache")
        return
    url = f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    database = await open_any(url)
    yield database_store(database, tmp_path / "cache")
    await close_any(database)


class Package:
    """A file of random bytes and its sha256, copied anew for each put (a put consumes it)."""

    def __init__(self, folder: Path, size: int) -> None:
        self.data = os.urandom(size)
        self.digest = hashlib.sha256(self.data).hexdigest()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._copies = 0

    def upload(self) -> Path:
        self._copies += 1
        path = self.folder / f"upload-{self.digest[:8]}-{self._copies}"
        path.write_bytes(self.data)
        return path


@pytest.fixture
def package(tmp_path: Path) -> Package:
    return Package(tmp_path / "uploads", 3 * 1024 * KiB + 123)  # 49 chunks, the last one short


async def test_a_multi_chunk_package_reads_back_byte_for_byte(store: BlobStore, package: Package) -> None:
    upload = package.upload()
    await store.put(upload, package.digest)
    assert not upload.exists()  # consumed
    assert await store.contains(package.digest)
    assert await store.digests() == {package.digest}
    assert (await store.local_path(package.digest)).read_bytes() == package.data


async def test_an_empty_package_is_stored_too(store: BlobStore, tmp_path: Path) -> None:
    empty = Package(tmp_path / "uploads", 0)
    await store.put(empty.upload(), empty.digest)
    assert (await store.local_path(empty.digest)).read_bytes() == b""


async def test_putting_a_stored_package_again_changes_nothing(store: BlobStore, package: Package) -> None:
    await store.put(package.upload(), package.digest)
    again = package.upload()
    await store.put(again, package.digest)
    assert not again.exists()
    assert await store.digests() == {package.digest}
    assert (await store.local_path(package.digest)).read_bytes() == package.data


async def test_a_removed_package_is_gone_and_others_stay(
    store: BlobStore, package: Package, tmp_path: Path
) -> None:
    other = Package(tmp_path / "uploads", 100 * KiB)
    await store.put(package.upload(), package.digest)
    await store.put(other.upload(), other.digest)
    path = await store.local_path(package.digest)
    await store.remove(package.digest)
    await store.remove(package.digest)  # removing what is not there is no error
    assert await store.digests() == {other.digest}
    assert not await store.contains(package.digest)
    assert not path.exists()  # this host's copy went with it
    with pytest.raises(BlobMissing, match=package.digest):
        await store.local_path(package.digest)
    assert (await store.local_path(other.digest)).read_bytes() == other.data


async def test_an_unknown_digest_is_missing_and_a_malformed_one_refused(store: BlobStore) -> None:
    unknown = "0" * 64
    assert not await store.contains(unknown)
    with pytest.raises(BlobMissing):
        await store.local_path(unknown)
    with pytest.raises(ValueError, match="not a sha256 digest"):
        await store.local_path("../../etc/passwd")


@pytest.fixture
def other_file_system(tmp_path: Path) -> Path:
    """A folder on another file system than ``tmp_path`` (where no rename reaches)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's folder")
    return shm


async def test_the_folder_store_takes_a_file_from_another_file_system(
    tmp_path: Path, package: Package, other_file_system: Path
) -> None:
    store = FolderBlobStore(tmp_path / "packages")
    upload = other_file_system / f"mdeploy-test-{package.digest}"
    upload.write_bytes(package.data)
    try:
        await store.put(upload, package.digest)
        assert not upload.exists()
    finally:
        upload.unlink(missing_ok=True)
    assert (await store.local_path(package.digest)).read_bytes() == package.data
    assert [p.name for p in (tmp_path / "packages").iterdir()] == [f"{package.digest}.pkg"]


# ---- the database store: several hosts, damage, concurrency ----


async def host(url: str, cache: Path) -> DatabaseBlobStore:
    """A gateway host: its own connection to the shared database and its own cache folder."""
    return database_store(await open_any(url), cache)


async def test_another_host_reads_a_package_the_first_put(
    database_url: str, tmp_path: Path, package: Package
) -> None:
    one, two = await host(database_url, tmp_path / "one"), await host(database_url, tmp_path / "two")
    try:
        await one.put(package.upload(), package.digest)
        path = await two.local_path(package.digest)
        assert path.parent == tmp_path / "two"
        assert path.read_bytes() == package.data
        await one.remove(package.digest)
        with pytest.raises(BlobMissing):
            await two.local_path(package.digest)
        assert list((tmp_path / "two").iterdir()) == []  # the stale copy went on first use
    finally:
        await close_any(one.database)
        await close_any(two.database)


async def test_a_host_drops_cached_copies_of_packages_removed_elsewhere_when_listing(
    database_url: str, tmp_path: Path, package: Package
) -> None:
    one, two = await host(database_url, tmp_path / "one"), await host(database_url, tmp_path / "two")
    try:
        await one.put(package.upload(), package.digest)
        await two.local_path(package.digest)
        await one.remove(package.digest)
        assert await two.digests() == set()
        assert list((tmp_path / "two").iterdir()) == []
    finally:
        await close_any(one.database)
        await close_any(two.database)


async def test_concurrent_puts_of_one_package_from_two_hosts_both_succeed(
    database_url: str, tmp_path: Path, package: Package
) -> None:
    one, two = await host(database_url, tmp_path / "one"), await host(database_url, tmp_path / "two")
    try:
        await asyncio.gather(
            one.put(package.upload(), package.digest), two.put(package.upload(), package.digest)
        )
        reader = database_store(one.database, tmp_path / "reader")
        assert (await reader.local_path(package.digest)).read_bytes() == package.data
        assert await rows(one.database, package.digest) == len(package.data) // CHUNK + 1 + 1  # + header
    finally:
        await close_any(one.database)
        await close_any(two.database)


async def test_a_damaged_chunk_is_detected_on_read_and_leaves_nothing_cached(
    database: Database, tmp_path: Path, package: Package
) -> None:
    await database_store(database, tmp_path / "writer").put(package.upload(), package.digest)
    await database.run(
        execute,
        sa.update(package_blobs)
        .where(package_blobs.c.digest == package.digest, package_blobs.c.chunk == 7)
        .values(data=os.urandom(CHUNK)),
    )
    reader = database_store(database, tmp_path / "reader")
    with pytest.raises(BlobCorrupt, match=f"package {package.digest} .* does not match its sha256"):
        await reader.local_path(package.digest)
    assert list((tmp_path / "reader").iterdir()) == []


async def test_a_missing_chunk_is_detected_on_read_and_leaves_nothing_cached(
    database: Database, tmp_path: Path, package: Package
) -> None:
    await database_store(database, tmp_path / "writer").put(package.upload(), package.digest)
    await database.run(
        execute,
        sa.delete(package_blobs).where(package_blobs.c.digest == package.digest, package_blobs.c.chunk == 9),
    )
    reader = database_store(database, tmp_path / "reader")
    with pytest.raises(BlobCorrupt, match=f"chunk 9 of package {package.digest} is missing"):
        await reader.local_path(package.digest)
    assert list((tmp_path / "reader").iterdir()) == []


async def test_a_put_that_died_midway_is_not_complete_and_the_next_put_finishes_it(
    database: Database, tmp_path: Path, package: Package
) -> None:
    # What a process killed mid-put leaves: some chunks, no header; here with a smaller chunk
    # size than now, so more rows than the blob has chunks now.
    rows_left = [
        {"digest": package.digest, "chunk": i, "data": package.data[i * 1000 : (i + 1) * 1000]}
        for i in range(60)
    ]
    await database.run(execute, sa.insert(package_blobs), rows_left)
    store = database_store(database, tmp_path / "cache")
    assert not await store.contains(package.digest)
    assert await store.digests() == {package.digest}  # listed, so the registry can remove it
    with pytest.raises(BlobMissing):
        await store.local_path(package.digest)
    await store.put(package.upload(), package.digest)
    reader = database_store(database, tmp_path / "reader")
    assert (await reader.local_path(package.digest)).read_bytes() == package.data


async def test_a_file_that_does_not_hash_to_its_digest_is_not_stored(
    database: Database, tmp_path: Path, package: Package
) -> None:
    store = database_store(database, tmp_path / "cache")
    wrong = "f" * 64
    upload = package.upload()
    with pytest.raises(BlobCorrupt, match=f"not to {wrong}"):
        await store.put(upload, wrong)
    assert upload.exists()  # left to the caller on failure
    assert not await store.contains(wrong)


class CountingDatabase:
    """The real database, counting the transactions run through it by what they do."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.backend: Backend = database.backend
        self.writes: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        self.writes[work.__name__] += 1
        return await self.database.run(work, *args)

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        self.reads[work.__name__] += 1
        return await self.database.read(work, *args)

    async def close(self) -> None:
        await self.database.close()


async def test_putting_a_stored_package_again_writes_nothing(
    database: Database, tmp_path: Path, package: Package
) -> None:
    await database_store(database, tmp_path / "one").put(package.upload(), package.digest)
    counting = CountingDatabase(database)
    await database_store(counting, tmp_path / "two").put(package.upload(), package.digest)
    assert counting.writes == Counter()


async def test_concurrent_readers_on_one_host_share_one_fetch(
    database: Database, tmp_path: Path, package: Package
) -> None:
    await database_store(database, tmp_path / "writer").put(package.upload(), package.digest)
    counting = CountingDatabase(database)
    reader = database_store(counting, tmp_path / "reader")
    paths = await asyncio.gather(*(reader.local_path(package.digest) for _ in range(5)))
    assert set(paths) == {tmp_path / "reader" / f"{package.digest}.pkg"}
    assert paths[0].read_bytes() == package.data
    batches = -(-len(package.data) // BATCH)
    assert counting.reads["_chunks"] == batches
    await reader.local_path(package.digest)  # cached now: no more chunk reads
    assert counting.reads["_chunks"] == batches


def execute(connection: sa.Connection, statement: sa.Executable, rows: Any = None) -> None:
    connection.execute(statement, rows)


async def rows(database: Database, digest: str) -> int:
    def count(connection: sa.Connection) -> int:
        statement = sa.select(sa.func.count()).where(package_blobs.c.digest == digest)
        return int(connection.execute(statement).scalar_one())

    return await database.read(count)


# ---- the S3 store: several hosts, multipart uploads, damage ----


@pytest.fixture
def large_package(tmp_path: Path) -> Package:
    return Package(tmp_path / "uploads", 11 * MiB + 5)  # three parts of 5 MiB at most


@pytest.mark.e2e
async def test_another_host_reads_a_multipart_package_from_the_bucket(
    seaweedfs: SeaweedFS, prefix: str, tmp_path: Path, large_package: Package
) -> None:
    one, two = s3_store(seaweedfs, prefix, tmp_path / "one"), s3_store(seaweedfs, prefix, tmp_path / "two")
    await one.put(large_package.upload(), large_package.digest)
    head = seaweedfs.client().head_object(Bucket=BUCKET, Key=one.key(large_package.digest))
    assert head["ETag"].endswith('-3"')  # assembled from three parts
    path = await two.local_path(large_package.digest)
    assert path.parent == tmp_path / "two"
    assert path.read_bytes() == large_package.data
    await one.remove(large_package.digest)
    with pytest.raises(BlobMissing):
        await two.local_path(large_package.digest)
    assert list((tmp_path / "two").iterdir()) == []


@pytest.mark.e2e
async def test_concurrent_puts_of_one_package_to_the_bucket_both_succeed(
    seaweedfs: SeaweedFS, prefix: str, tmp_path: Path, large_package: Package
) -> None:
    one, two = s3_store(seaweedfs, prefix, tmp_path / "one"), s3_store(seaweedfs, prefix, tmp_path / "two")
    await asyncio.gather(
        one.put(large_package.upload(), large_package.digest),
        two.put(large_package.upload(), large_package.digest),
    )
    reader = s3_store(seaweedfs, prefix, tmp_path / "reader")
    assert (await reader.local_path(large_package.digest)).read_bytes() == large_package.data
    assert await reader.digests() == {large_package.digest}


@pytest.mark.e2e
async def test_a_damaged_object_is_detected_on_read_and_leaves_nothing_cached(
    seaweedfs: SeaweedFS, prefix: str, tmp_path: Path, package: Package
) -> None:
    store = s3_store(seaweedfs, prefix, tmp_path / "writer")
    await store.put(package.upload(), package.digest)
    damaged = bytearray(package.data)
    damaged[len(damaged) // 2] ^= 0xFF
    seaweedfs.client().put_object(Bucket=BUCKET, Key=store.key(package.digest), Body=bytes(damaged))
    reader = s3_store(seaweedfs, prefix, tmp_path / "reader")
    with pytest.raises(BlobCorrupt, match=f"package {package.digest} read from the s3 bucket .* sha256"):
        await reader.local_path(package.digest)
    assert list((tmp_path / "reader").iterdir()) == []


@pytest.mark.e2e
async def test_a_bucket_refusing_the_credentials_is_unavailable_with_the_reason(
    seaweedfs: SeaweedFS, prefix: str, tmp_path: Path, package: Package
) -> None:
    store = S3BlobStore(seaweedfs.client(secret_key="wrong"), BUCKET, tmp_path / "cache", prefix=prefix)
    upload = package.upload()
    with pytest.raises(
        Unavailable, match=r"s3 bucket packages/test-\d+/ at http://127.0.0.1:\d+\) failed: .*403"
    ):
        await store.put(upload, package.digest)
    assert upload.exists()


@pytest.mark.e2e
async def test_a_bucket_refusing_the_upload_is_unavailable_and_the_file_is_kept(
    seaweedfs: SeaweedFS, prefix: str, tmp_path: Path, large_package: Package
) -> None:
    reader = seaweedfs.client(READER_KEY, READER_SECRET)
    store = S3BlobStore(reader, BUCKET, tmp_path / "cache", prefix=prefix, part_size=5 * MiB)
    upload = large_package.upload()
    with pytest.raises(Unavailable, match="AccessDenied"):
        await store.put(upload, large_package.digest)
    assert upload.exists()
    assert not await store.contains(large_package.digest)
    uploads = seaweedfs.client().list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    assert uploads.get("Uploads", []) == []  # none left open
