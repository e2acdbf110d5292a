"""verified facts: a computation's verified receipt, a host's verified TEE kinds

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sealroom.controlplane.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("computations") as b:
        b.add_column(sa.Column("receipt_ok", sa.Boolean(), nullable=True))
        b.add_column(sa.Column("receipt_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("hosts") as b:
        b.add_column(sa.Column("tee_verified", sa.JSON(), nullable=True))
        b.add_column(sa.Column("tee_verified_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as b:
        b.drop_column("tee_verified_at")
        b.drop_column("tee_verified")
    with op.batch_alter_table("computations") as b:
        b.drop_column("receipt_at")
        b.drop_column("receipt_ok")
