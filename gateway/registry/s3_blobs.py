"""Package blobs in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW, R2), which
every gateway host reads, each keeping verified copies in its cache folder.

A blob is the object ``<prefix><digest>.pkg``. A put uploads it in parts (boto3's transfer
manager: multipart above ``part_size``, parts read from disk a few at a time, each with its
sha256 checked by the server) that the server assembles on the last request, so the object
appears whole or not at all; a failed upload is aborted (a bucket lifecycle rule that aborts
incomplete multipart uploads after a day covers processes that die mid-way). Two hosts putting
one digest at once store the same bytes. Reads stream the object into the cache, hashed as it
comes (see :class:`~gateway.registry.blobs.BlobCache`).

boto3 is synchronous: every call runs in a worker thread. It is the ``s3`` extra; import this
module only where the settings name a bucket.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.errors import Unavailable
from gateway.registry.blobs import SUFFIX, BlobCache, BlobMissing, MiB, Sink, check_digest

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

T = TypeVar("T")
_MAX_PARTS = 10_000  # S3's limit on the parts of one upload
_MISSING = {"404", "NoSuchKey", "NotFound"}


def s3_client(
    endpoint_url: str | None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
) -> S3Client:
    """A client for AWS (``endpoint_url`` None) or any S3-compatible server. Credentials not
    given come from boto3's usual chain (environment, profile, instance role)."""
    config = Config(
        # Path-style (endpoint/bucket/key): what S3-compatible servers answer without DNS names.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"max_attempts": 5, "mode": "standard"},
        # Checksums only where asked for (each part's sha256 is): not every S3-compatible server
        # knows the newer default ones.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )


class S3BlobStore:
    """Blobs as objects ``<prefix><digest>.pkg`` of ``bucket``; verified copies in ``cache_dir``."""

    name = "s3"

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        cache_dir: Path,
        *,
        prefix: str = "packages/",
        part_size: int = 16 * MiB,
        concurrency: int = 4,
    ) -> None:
        if part_size < 5 * MiB:
            raise ValueError(f"S3 parts are at least 5 MiB, not {part_size} bytes")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.cache = BlobCache(cache_dir)
        self.part_size = part_size
        self.concurrency = concurrency
        self._keys = re.compile(rf"^{re.escape(prefix)}([0-9a-f]{{64}}){re.escape(SUFFIX)}$")

    @property
    def description(self) -> str:
        return f"s3 bucket {self.bucket}/{self.prefix} at {self.client.meta.endpoint_url}"

    def key(self, digest: str) -> str:
        return f"{self.prefix}{check_digest(digest)}{SUFFIX}"

    async def contains(self, digest: str) -> bool:
        return await self._call(self._size, self.key(digest)) is not None

    async def put(self, source: Path, digest: str) -> None:
        key = self.key(digest)
        if await self._call(self._size, key) is None:
            await self._call(self._upload, source, key)
        await asyncio.to_thread(self.cache.keep, source, digest)

    async def local_path(self, digest: str) -> Path:
        return await self.cache.once(check_digest(digest), partial(self._fetch, digest))

    async def _fetch(self, digest: str) -> Path:
        key = self.key(digest)
        size = await self._call(self._size, key)
        if size is None:
            self.cache.drop(digest)  # removed through another host
            raise BlobMissing(f"package {digest} is not in the {self.description}")
        cached = self.cache.fresh(digest, size)
        if cached is not None:
            return cached

        async def download(sink: Sink) -> None:
            if not await self._call(self._get, key, sink):
                raise BlobMissing(f"package {digest} was removed from the {self.description} while read")

        return await self.cache.fill(digest, size, download, f"s3 bucket {self.bucket}")

    async def remove(self, digest: str) -> None:
        await self._call(partial(self.client.delete_object, Bucket=self.bucket, Key=self.key(digest)))
        self.cache.drop(digest)

    async def digests(self) -> set[str]:
        """Complete objects only: S3 shows no upload before it completes (incomplete ones are
        the lifecycle rule's). Also drops cached copies of blobs no longer stored."""
        stored = await self._call(self._list)
        self.cache.prune(stored)
        return stored

    # ---- in a worker thread ----

    async def _call(self, call: Callable[..., T], *args: object) -> T:
        """``call(*args)`` in a thread, with S3's failures as Unavailable."""
        with self._unavailable():
            return await asyncio.to_thread(call, *args)

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as error:  # Boto3Error: a failed upload
            raise Unavailable(f"the package store ({self.description}) failed: {error}") from error

    def _size(self, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise

    def _upload(self, source: Path, key: str) -> None:
        part = max(self.part_size, -(-source.stat().st_size // _MAX_PARTS))
        transfer = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=self.concurrency
        )
        self.client.upload_file(
            str(source), self.bucket, key, Config=transfer, ExtraArgs={"ChecksumAlgorithm": "SHA256"}
        )

    def _get(self, key: str, sink: Sink) -> bool:
        """Stream the object into ``sink``; False if it is gone."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        with body:
            for piece in body.iter_chunks(MiB):
                sink.write(piece)
        return True

    def _list(self) -> set[str]:
        found: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        ):
            for item in page.get("Contents", []):
                if match := self._keys.match(item.get("Key", "")):
                    found.add(match[1])
        return found
