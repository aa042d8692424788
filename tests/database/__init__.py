"""The gateway database on SQLite and on a real PostgreSQL."""
