"""Which package store and which session liveness a gateway uses, from its settings: the data
folder's on one host, the database's when gateway hosts share PostgreSQL."""

from __future__ import annotations

from core.errors import InvalidInput
from gateway.database.advisory import PostgresLiveness
from gateway.database.engine import Database
from gateway.registry.blobs import BlobStore, DatabaseBlobStore, FolderBlobStore
from gateway.registry.service import WORK_FOLDER
from gateway.registry.sessions import LocalLiveness, SessionLiveness
from gateway.settings import GatewaySettings


def package_store(settings: GatewaySettings, database: Database) -> BlobStore:
    kind = settings.package_store_kind
    if kind == "database":
        return DatabaseBlobStore(database, settings.packages_dir)
    if kind == "s3":
        assert settings.s3_bucket is not None  # the settings check it
        try:
            from gateway.registry.s3_blobs import S3BlobStore, s3_client  # boto3: the s3 extra
        except ImportError:
            raise InvalidInput("package_store s3 needs boto3: pip install 'mdeploy[s3]'") from None
        client = s3_client(settings.s3_endpoint_url, region=settings.s3_region)
        return S3BlobStore(client, settings.s3_bucket, settings.packages_dir, prefix=settings.s3_prefix)
    return FolderBlobStore(settings.packages_dir)


def session_liveness(settings: GatewaySettings, database: Database) -> SessionLiveness:
    """Advisory locks of the shared PostgreSQL (processes on any host), else the data folder's flocks."""
    if database.backend == "postgresql" and settings.database_url is not None:
        return PostgresLiveness(settings.database_url)
    return LocalLiveness(settings.data_dir / WORK_FOLDER)
