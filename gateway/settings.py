"""Settings of one gateway process.

Read, highest precedence first, from command-line flags (``mdeploy serve``), environment
variables prefixed ``MDEPLOY_``, and an optional JSON or TOML file named by
``MDEPLOY_SETTINGS_FILE``. Each field is documented once, here. The defaults serve one
machine with no other service running.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from core.errors import InvalidInput
from core.settings_file import read_settings_file
from gateway.backend_address import BackendTls, parse_backend
from gateway.database.engine import postgres_url
from gateway.drift.windows import windows_of

MiB = 1024 * 1024
SETTINGS_FILE_VARIABLE = "MDEPLOY_SETTINGS_FILE"


class GatewaySettings(BaseSettings):
    """Everything a gateway process can be told."""

    model_config = SettingsConfigDict(env_prefix="MDEPLOY_", extra="ignore")

    data_dir: Path = Path(".mdeploy")
    """Registry database, package store and model repository live here."""
    host: str = "127.0.0.1"
    """Address the HTTP API listens on."""
    port: int = Field(default=8000, ge=0, le=65535)
    """Port the HTTP API listens on."""
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    """Port of the gRPC API (KServe v2 / Triton ``GRPCInferenceService``), on ``host``; 0 turns it off."""
    tls_cert_file: Path | None = None
    """PEM certificate (chain): the HTTP and gRPC APIs then speak TLS only; None: plaintext."""
    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file``."""
    grpc_max_message_bytes: int = Field(default=16 * MiB, ge=1024)
    """Largest gRPC message, received or sent; larger requests get RESOURCE_EXHAUSTED."""
    grpc_max_metadata_bytes: int = Field(default=16 * 1024, ge=1024)
    """Largest gRPC metadata (headers) of a request."""
    shutdown_grace_s: int = Field(default=30, ge=1)
    """On SIGTERM: requests in flight get this many seconds to finish; new connections are refused."""
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    """Gateway processes serving the same HTTP and gRPC ports (``mdeploy serve``; SO_REUSEPORT);
    ``auto``: one per core this process may use. More than one needs shared rate-limit counters
    (``rate_limit_storage`` on Redis). README "Gateway workers"."""
    backends: list[str] = Field(default_factory=list)
    """The inference servers: ``host:port``, or ``grpc://host:port?token_file=PATH`` for one that
    checks a server token (``gateway.backend_address``); empty with ``mdeploy serve``, which
    starts one local server, closed by a token, and uses it."""

    # ---- bounds on requests ----
    max_body_bytes: int = Field(default=16 * MiB, ge=1024)
    """Largest prediction request body; larger ones get 413."""
    max_rows_per_request: int = Field(default=1024, ge=1)
    """Most rows (instances) in one prediction request; more get 413."""
    max_elements_per_tensor: int = Field(default=4 * MiB, ge=1)
    """Most elements in one input tensor; more get 413."""
    max_upload_bytes: int = Field(default=1024 * MiB, ge=1024)
    """Largest package upload; larger ones get 413 and nothing is stored."""
    max_eval_bytes: int = Field(default=256 * MiB, ge=1024)
    """Largest evaluation set upload (gates, compare); larger ones get 413."""
    max_eval_rows: int = Field(default=100_000, ge=1)
    """Most rows in an evaluation set."""

    # ---- batching in the gateway ----
    batch_max_rows: int = Field(default=64, ge=1)
    """Most rows one backend call carries (also capped by the model's max batch size)."""
    batch_max_delay_ms: float = Field(default=2.0, ge=0)
    """How long arrivals may wait for a batch to fill while another batch is in flight."""
    batch_max_queue: int = Field(default=2048, ge=1)
    """Requests waiting per model version; more get 429 with Retry-After until the queue drains."""
    batch_concurrency: int = Field(default=0, ge=0)
    """Backend calls in flight per model version; 0: one per inference server in ``backends``.
    Requests that arrive while those calls run wait to go together: one call at a time per
    server made the gateway's gRPC door 3,133 instead of 2,372 req/s at 64 in flight, and HTTP
    12,937 instead of 12,585 (``bench_grpc --quick``, one local server; 4 calls before)."""

    # ---- backends ----
    backend_tls_ca_file: Path | None = None
    """CA that ``grpcs://`` inference servers' certificates must chain to (None: the system's)."""
    backend_tls_cert_file: Path | None = None
    """Client certificate the gateway presents to ``grpcs://`` servers that want one (mutual TLS)."""
    backend_tls_key_file: Path | None = None
    """Private key of ``backend_tls_cert_file``."""
    backend_timeout_s: float = Field(default=30.0, gt=0)
    """Deadline of one backend call; past it the client gets 504 and the backend is marked down."""
    health_interval_s: float = Field(default=2.0, gt=0)
    """How often each backend's grpc.health.v1 status is checked."""
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    """How often the registry's desired state is compared with what each backend holds."""

    # ---- routing between versions ----
    database_url: str | None = None
    """postgresql://user:password@host:5432/name: registry, keys, audit, deployments, the feedback
    ledger and bandit statistics in PostgreSQL, shared by gateway processes on several hosts (each
    keeps its own data folder for caches and work files). None: the SQLite file of the data folder."""
    package_store: Literal["auto", "folder", "database", "s3"] = "auto"
    """Where pushed packages are kept: ``folder`` (``package_folder``: one host, or a volume every
    gateway host mounts), ``database`` (chunked rows in the gateway database), ``s3`` (objects in
    ``s3_bucket``; the ``s3`` extra); the last two verify each package by digest when a host reads
    it and cache it in ``package_folder``. ``auto``: the database when ``database_url`` is set, else
    the folder."""
    package_folder: Path | None = None
    """The package folder (or cache); None: ``packages`` in the data folder."""
    s3_bucket: str | None = None
    """The bucket of ``package_store=s3``; credentials come from boto3's chain (AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, a profile, an instance role)."""
    s3_endpoint_url: str | None = None
    """An S3-compatible server (MinIO, SeaweedFS, Ceph RGW: http://host:8333); None: AWS."""
    s3_prefix: str = "packages/"
    """Object names are ``<prefix><sha256>.pkg``."""
    s3_region: str | None = None
    shared_state_url: str | None = None
    """redis://host:port to share bandit statistics and the feedback ledger between gateway
    processes on several hosts; None keeps both in the SQLite database of the data folder."""
    feedback_ttl_s: float = Field(default=3600.0, gt=0)
    """How long a request id can receive feedback."""
    feedback_max_entries: int = Field(default=1_000_000, ge=1)
    """Most request ids remembered for feedback (the oldest are forgotten first)."""
    deployment_refresh_s: float = Field(default=1.0, gt=0)
    """How soon a deployment change made by another gateway process takes effect here."""
    routing_seed: int | None = None
    """Seed of the routing policies' random draws (reproducible simulations); None: from the OS."""

    # ---- drift ----
    drift_sample_rate: float = Field(default=0.2, ge=0.0, le=1.0)
    """Share of answered requests whose inputs and outputs are sketched for drift (0: none)."""
    drift_windows: list[str] = Field(default_factory=lambda: ["5m", "1h", "24h"])
    """Windows drift is reported over (a number and s, m, h or d); each is kept in ten buckets."""
    drift_publish_s: float = Field(default=2.0, gt=0)
    """How often this process hands its drift sketches and time series to the other gateway processes."""
    drift_check_s: float = Field(default=10.0, gt=0)
    """How often drift scores are computed for metrics and checked against the models' alerts."""
    webhook_secret: str | None = Field(default=None, min_length=16, repr=False)
    """Key of the HMAC-SHA256 signature on drift alert webhooks (header X-Mdeploy-Signature);
    a model's alert can name a webhook only when it is set."""

    # ---- prediction logs (turned on per model through the admin API) ----
    prediction_log_max_export_rows: int = Field(default=1_000_000, ge=1)
    """Most rows one prediction log export returns; a longer time range is refused (413)."""
    prediction_log_max_export_bytes: int = Field(default=512 * MiB, ge=MiB)
    """Most bytes (in memory, before compression) one prediction log export reads."""

    # ---- auth and rate limits ----
    admin_key_file: Path | None = None
    """File holding the admin API key (``mdk_...``; a mounted secret, e.g. Kubernetes'): registered
    with every scope if it is not yet, and nothing is written to the data folder. None: the first
    start makes a key and saves it as ``<data_dir>/admin-key``."""
    rate_limit_storage: str = "memory://"
    """Where rate-limit counters live: memory:// (one process) or redis://host:port (shared)."""
    rate_limit_predict: str = "6000/minute"
    """Default limit of keys with the predict scope (a key's own limit overrides it)."""
    rate_limit_feedback: str = "6000/minute"
    """Default limit of keys with the feedback scope."""
    rate_limit_admin: str = "600/minute"
    """Default limit of keys with the admin scope."""
    auth_failures_per_minute: int = Field(default=30, ge=1)
    """Failed authentications one client address may make per minute (both protocols); past
    that its requests get 429 at once, without a key-store lookup, except with a key this
    process has verified before."""
    rate_limit_fail_open: bool = False
    """When the rate-limit storage is unreachable: True lets requests through, False answers 503."""

    @model_validator(mode="after")
    def _tls_pairs_are_whole(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS for the gateway's APIs needs both --tls-cert and --tls-key")
        if (self.backend_tls_cert_file is None) != (self.backend_tls_key_file is None):
            raise ValueError(
                "a client certificate for the backends needs both --backend-tls-cert and --backend-tls-key"
            )
        return self

    @property
    def backend_tls(self) -> BackendTls:
        return BackendTls(self.backend_tls_ca_file, self.backend_tls_cert_file, self.backend_tls_key_file)

    @field_validator("drift_windows")
    @classmethod
    def _drift_windows_are_durations(cls, names: list[str]) -> list[str]:
        try:
            windows_of(names)
        except InvalidInput as error:
            raise ValueError(str(error)) from None
        return names

    @field_validator("database_url")
    @classmethod
    def _database_is_postgres(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            postgres_url(url)
        except InvalidInput as error:
            raise ValueError(error.message) from None
        return url

    @model_validator(mode="after")
    def _s3_has_a_bucket(self) -> GatewaySettings:
        if self.package_store == "s3" and not self.s3_bucket:
            raise ValueError("package_store s3 needs s3_bucket (MDEPLOY_S3_BUCKET)")
        return self

    @field_validator("backends")
    @classmethod
    def _backends_are_named_right(cls, backends: list[str]) -> list[str]:
        for backend in backends:
            try:
                parse_backend(backend)
            except InvalidInput as error:
                raise ValueError(error.message) from None
        return backends

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init arguments) over the environment over ``MDEPLOY_SETTINGS_FILE`` over defaults."""
        named = os.environ.get(SETTINGS_FILE_VARIABLE)
        from_file = InitSettingsSource(settings_cls, read_settings_file(Path(named))) if named else None
        return tuple(s for s in (init_settings, env_settings, dotenv_settings, from_file) if s is not None)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "registry.sqlite3"

    @property
    def packages_dir(self) -> Path:
        return self.package_folder or self.data_dir / "packages"

    @property
    def package_store_kind(self) -> Literal["folder", "database", "s3"]:
        if self.package_store == "auto":
            return "database" if self.database_url is not None else "folder"
        return self.package_store

    @property
    def repository_dir(self) -> Path:
        return self.data_dir / "repository"
