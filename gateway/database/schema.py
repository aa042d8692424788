"""Every table of the gateway's database, once, for both back ends.

Types are chosen so that one definition renders right on each: ``REAL_`` is DOUBLE PRECISION on
PostgreSQL (its REAL has 6 digits) and REAL on SQLite, whose STRICT tables allow only INTEGER,
REAL, TEXT and BLOB; ``BIG`` is BIGINT on PostgreSQL (sizes and counts past 2**31) and INTEGER on
SQLite (64-bit anyway). Times are seconds since the epoch, as floats, on both.

Alembic migrations (``gateway.database.migrations``) create and change these tables; nothing
else does. A change here needs a new migration.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeEngine

metadata = MetaData()

REAL_: TypeEngine[float] = Double().with_variant(sqlite.REAL(), "sqlite")
BIG: TypeEngine[int] = BigInteger().with_variant(sqlite.INTEGER(), "sqlite")

registry_models = Table(
    "registry_models",
    metadata,
    Column("name", Text, primary_key=True),
    Column("created_at", REAL_, nullable=False),
    Column("created_by", Text, nullable=False),
    sqlite_strict=True,
)

registry_versions = Table(
    "registry_versions",
    metadata,
    Column("model", Text, ForeignKey("registry_models.name"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("package_version", Text, nullable=False),  # the manifest's own version string
    Column("digest", Text, nullable=False, unique=True),  # sha256 of the package: its identity
    Column("size", BIG, nullable=False),
    Column("manifest", Text, nullable=False),  # MANIFEST.json
    Column("state", Text, nullable=False),
    Column("prior_state", Text),  # what an aborted pending row returns to
    Column("session", Text),  # owner of a pending row
    Column("pushed_by", Text, nullable=False),
    Column("pushed_at", REAL_, nullable=False),
    Column("retired_by", Text),
    Column("retired_at", REAL_),
    PrimaryKeyConstraint("model", "version"),
    CheckConstraint("version > 0", name="registry_versions_version_positive"),
    CheckConstraint("state IN ('pending', 'live', 'retired')", name="registry_versions_state_known"),
    CheckConstraint("prior_state IN ('retired')", name="registry_versions_prior_state"),
    Index("registry_versions_state", "state", "model"),
    sqlite_strict=True,
)

package_blobs = Table(
    "package_blobs",
    metadata,
    Column("digest", Text, nullable=False),  # sha256 of the whole package
    Column("chunk", Integer, nullable=False),  # 0, 1, ...: the package is their concatenation; -1: its header
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("digest", "chunk"),
    sqlite_strict=True,
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BIG, primary_key=True, autoincrement=True),
    Column("at", REAL_, nullable=False),
    Column("actor", Text, nullable=False),  # who: 'key:<id>' for API keys
    Column("action", Text, nullable=False),  # push, restore, delete, ...
    Column("model", Text),
    Column("version", Text),
    Column("from_value", Text),  # the subject before the change (a state, a weight...)
    Column("to_value", Text),  # and after
    Column("reason", Text, nullable=False, server_default=text("''")),  # why, as the actor said
    Column("details", Text, nullable=False, server_default=text("'{}'")),  # JSON
    Index("audit_log_model", "model", "id"),
    sqlite_autoincrement=True,
    sqlite_strict=True,
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("secret_sha256", LargeBinary, nullable=False),
    Column("name", Text, nullable=False),
    Column("scopes", Text, nullable=False),  # JSON array of scope names
    Column("models", Text),  # JSON array of model names; NULL: every model
    Column("rate_limit", Text),  # e.g. '100/minute'; NULL: the scope's default
    Column("created_at", REAL_, nullable=False),
    Column("expires_at", REAL_),
    Column("revoked_at", REAL_),
    Column("expiry_audited", Integer, nullable=False, server_default=text("0")),  # 1 once audited
    sqlite_strict=True,
)

deployments = Table(
    "deployments",
    metadata,
    Column("model", Text, primary_key=True),
    Column("spec", Text, nullable=False),  # PolicySpec as JSON
    Column("guard", Text, nullable=False),  # GuardSpec as JSON
    Column("stable", Text, nullable=False),  # the version rollbacks return to
    Column("generation", Integer, nullable=False),
    Column("updated_at", REAL_, nullable=False),
    Column("updated_by", Text, nullable=False),
    Column("history", Text, nullable=False, server_default=text("'[]'")),  # earlier live states (JSON)
    Column("started_at", REAL_, nullable=False, server_default=text("0")),  # when this policy began
    sqlite_strict=True,
)

bandit_stats = Table(
    "bandit_stats",
    metadata,
    Column("model", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("pulls", BIG, nullable=False, server_default=text("0")),
    Column("rewards", BIG, nullable=False, server_default=text("0")),
    Column("reward_sum", REAL_, nullable=False, server_default=text("0")),
    Column("reward_sq", REAL_, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("model", "version"),
    sqlite_strict=True,
)

feedback_ledger = Table(
    "feedback_ledger",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("model", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("at", REAL_, nullable=False),  # wall-clock seconds: shared by processes
    Column("claimed", Integer, nullable=False, server_default=text("0")),
    Index("feedback_ledger_at", "at"),
    sqlite_strict=True,
)

version_evaluations = Table(
    "version_evaluations",
    metadata,
    Column("id", BIG, primary_key=True, autoincrement=True),
    Column("model", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("at", REAL_, nullable=False),
    Column("actor", Text, nullable=False),
    Column("evaluation", Text, nullable=False),  # the Evaluation as JSON
    Index("version_evaluations_version", "model", "version", "id"),
    sqlite_autoincrement=True,
    sqlite_strict=True,
)

model_gates = Table(
    "model_gates",
    metadata,
    Column("model", Text, primary_key=True),
    Column("gates", Text, nullable=False),  # JSON list of gate expressions
    Column("auto_promote", Integer, nullable=False),  # 1: a push that passes every gate goes live
    Column("data_sha256", Text, nullable=False),  # the evaluation set (evaluation_sets)
    Column("rows", BIG, nullable=False),
    Column("updated_at", REAL_, nullable=False),
    Column("updated_by", Text, nullable=False),
    sqlite_strict=True,
)

evaluation_sets = Table(
    "evaluation_sets",
    metadata,
    Column("digest", Text, primary_key=True),  # sha256 of the .npz a model's gates run on
    Column("data", LargeBinary, nullable=False),
    Column("created_at", REAL_, nullable=False),
    sqlite_strict=True,
)

drift_alerts = Table(
    "drift_alerts",
    metadata,
    Column("model", Text, primary_key=True),
    Column("conditions", Text, nullable=False),  # as given, e.g. 'psi>0.2, share>0.3'
    Column("min_rows", BIG, nullable=False),
    Column("window", Text, nullable=False),
    Column("webhook", Text),  # URL that gets each change of state, signed; NULL: none
    Column("updated_at", REAL_, nullable=False),
    Column("updated_by", Text, nullable=False),
    sqlite_strict=True,
)

drift_alert_states = Table(
    "drift_alert_states",
    metadata,
    Column("model", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("state", Text, nullable=False),  # ok | firing
    Column("changed_at", REAL_, nullable=False),
    PrimaryKeyConstraint("model", "version"),
    sqlite_strict=True,
)

drift_buckets = Table(
    "drift_buckets",
    metadata,
    Column("model", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("window", Text, nullable=False),
    Column("start", BIG, nullable=False),
    Column("instance", Text, nullable=False),
    Column("expires", REAL_, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("model", "version", "window", "start", "instance"),
    Index("drift_buckets_expiry", "expires"),
    sqlite_strict=True,
)

prediction_logs = Table(
    "prediction_logs",
    metadata,
    Column("model", Text, primary_key=True),
    Column("sample_rate", REAL_, nullable=False),  # share of answered requests logged, in (0, 1]
    Column("max_bytes", BIG, nullable=False),  # the model's folder is kept under this
    Column("updated_at", REAL_, nullable=False),
    Column("updated_by", Text, nullable=False),
    sqlite_strict=True,
)
