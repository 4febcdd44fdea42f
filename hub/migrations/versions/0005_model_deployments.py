"""model deployments: the model version each node or group should serve

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target", sa.String(length=80), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("target", "name"),
    )
    with op.batch_alter_table("model_deployments") as batch:
        batch.create_index(batch.f("ix_model_deployments_target"), ["target"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_deployments") as batch:
        batch.drop_index(batch.f("ix_model_deployments_target"))
    op.drop_table("model_deployments")
