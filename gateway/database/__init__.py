"""The gateway's database: one schema (SQLAlchemy Core), migrated by Alembic, on SQLite (one host,
the embedded default) or PostgreSQL (several hosts, ``MDEPLOY_DATABASE_URL``)."""
