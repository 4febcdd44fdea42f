"""a revision counter: heartbeats reuse the desired-state ETag until something it depends on changes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table("revision", sa.Column("id", sa.Integer(), nullable=False),
                            sa.Column("value", sa.BigInteger(), nullable=False), sa.PrimaryKeyConstraint("id"))
    op.bulk_insert(table, [{"id": 1, "value": 0}])


def downgrade() -> None:
    op.drop_table("revision")
