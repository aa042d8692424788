"""Alembic migrations of the gateway's database (``gateway.database.schema``), both back ends."""
