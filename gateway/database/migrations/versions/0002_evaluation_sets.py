"""Evaluation sets in the database, so every gateway host can run a model's gates.

They were files in the data folder (``evalsets/<sha256>.npz``), which only the host that took
``mdeploy gates`` had; those files stay readable (``EvaluationStore`` falls back to them).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluation_sets",
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Double().with_variant(sa.REAL(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
        sqlite_strict=True,
    )


def downgrade() -> None:
    op.drop_table("evaluation_sets")
