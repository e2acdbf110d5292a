"""per-account quotas (NULL: the control plane's default)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as b:
        b.add_column(sa.Column("quota_computations", sa.Integer(), nullable=True))
        b.add_column(sa.Column("quota_vcpus", sa.Integer(), nullable=True))
        b.add_column(sa.Column("quota_memory_mb", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as b:
        b.drop_column("quota_memory_mb")
        b.drop_column("quota_vcpus")
        b.drop_column("quota_computations")
