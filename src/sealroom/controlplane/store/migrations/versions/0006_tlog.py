"""transparency log: entries and perfect-subtree hashes (docs/adr/0031)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tlog_entries",
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tlog_entries_kind", "tlog_entries", ["kind"])
    op.create_index("ix_tlog_entries_leaf_hash", "tlog_entries", ["leaf_hash"])
    op.create_table(
        "tlog_nodes",
        sa.Column("level", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tlog_nodes")
    op.drop_index("ix_tlog_entries_leaf_hash", "tlog_entries")
    op.drop_index("ix_tlog_entries_kind", "tlog_entries")
    op.drop_table("tlog_entries")
