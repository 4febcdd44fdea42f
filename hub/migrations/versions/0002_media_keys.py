"""media keys hold <node>/<id> of the longest node and media ids

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("media") as batch:
        batch.alter_column("id", existing_type=sa.String(64), type_=sa.String(140), existing_nullable=False)
        batch.alter_column("upload_id", existing_type=sa.String(64), type_=sa.String(140), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("media") as batch:
        batch.alter_column("upload_id", existing_type=sa.String(140), type_=sa.String(64), existing_nullable=True)
        batch.alter_column("id", existing_type=sa.String(140), type_=sa.String(64), existing_nullable=False)
