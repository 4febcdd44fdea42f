"""pipeline rollouts and instance parameters: a rollout's kind (model or pipeline; earlier rollouts are model
rollouts), an assignment's parameter values (none: the pipeline's defaults)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="model"))
        batch.alter_column("model", existing_type=sa.String(length=64), type_=sa.String(length=100),
                           existing_nullable=False)  # pipeline names are up to 100 characters
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("params")
    with op.batch_alter_table("rollouts") as batch:
        batch.alter_column("model", existing_type=sa.String(length=100), type_=sa.String(length=64),
                           existing_nullable=False)
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("kind")
