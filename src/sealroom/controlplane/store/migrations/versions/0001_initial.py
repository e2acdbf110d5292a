"""initial control plane schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sealroom.controlplane.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_by", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("host_id", sa.String(40), nullable=True),
    )
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("credential_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tee_kinds", sa.JSON(), nullable=False),
        *(
            sa.Column(c, sa.BigInteger(), nullable=False)
            for c in (
                "cpu_total",
                "cpu_used",
                "memory_mb_total",
                "memory_mb_used",
                "gpu_total",
                "gpu_used",
                "disk_mb_total",
                "disk_mb_used",
            )
        ),
        sa.Column("enclaves", sa.Integer(), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.Column("last_heartbeat", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_hosts_state", "hosts", ["state"])
    op.create_table(
        "computations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("number", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("manifest_hash", sa.String(64), nullable=False),
        sa.Column("tee", sa.String(16), nullable=False),
        sa.Column("queue", sa.Boolean(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.BigInteger(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("disk_mb", sa.BigInteger(), nullable=False),
        sa.Column("host_id", sa.String(40), sa.ForeignKey("hosts.id"), nullable=True),
        sa.Column("enclave_url", sa.Text(), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("events_count", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_computations_account_id", "computations", ["account_id"])
    op.create_index("ix_computations_state", "computations", ["state"])
    op.create_index("ix_computations_host_id", "computations", ["host_id"])
    op.create_index("ix_computations_host_state", "computations", ["host_id", "state"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "computation_id",
            sa.String(40),
            sa.ForeignKey("computations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("enclave_seq", sa.BigInteger(), nullable=True),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.UniqueConstraint("computation_id", "seq", name="uq_events_seq"),
        sa.UniqueConstraint("computation_id", "enclave_seq", name="uq_events_enclave_seq"),
    )
    op.create_index("ix_events_computation_id", "events", ["computation_id"])
    op.create_table(
        "challenges",
        sa.Column("challenge", sa.String(64), primary_key=True),
        sa.Column(
            "computation_id",
            sa.String(40),
            sa.ForeignKey("computations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_challenges_computation_id", "challenges", ["computation_id"])
    op.create_table(
        "blobs",
        sa.Column(
            "computation_id",
            sa.String(40),
            sa.ForeignKey("computations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("stored_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    for t in (
        "blobs",
        "challenges",
        "events",
        "computations",
        "hosts",
        "join_tokens",
        "api_keys",
        "accounts",
    ):
        op.drop_table(t)
