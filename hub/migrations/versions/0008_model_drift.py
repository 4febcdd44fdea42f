"""model drift: drift scores per model, version and node over time (from heartbeats), and per-model drift
settings (threshold, how long it must stay over it)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_drift",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("detail", sa.JSON(), nullable=True),
    )
    op.create_index("ix_model_drift_model_ts", "model_drift", ["model", "ts"])
    op.create_table(
        "drift_settings",
        sa.Column("model", sa.String(length=64), primary_key=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("sustain_s", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("drift_settings")
    op.drop_index("ix_model_drift_model_ts", table_name="model_drift")
    op.drop_table("model_drift")
