"""SQLAlchemy 2 models. Secrets (API keys, agent credentials, join tokens) are stored only
as SHA-256 hex; the migration in ``migrations/versions`` creates exactly these tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # per-account limits on what its unfinished computations hold (NULL: the control
    # plane's default, Settings.quota_*; docs/adr/0019)
    quota_computations: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_vcpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_memory_mb: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class JoinToken(Base):
    __tablename__ = "join_tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    host_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    tee_kinds: Mapped[list[str]] = mapped_column(JSON)
    cpu_total: Mapped[int] = mapped_column(BigInteger, default=0)
    cpu_used: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_mb_total: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_mb_used: Mapped[int] = mapped_column(BigInteger, default=0)
    gpu_total: Mapped[int] = mapped_column(BigInteger, default=0)
    gpu_used: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_mb_total: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_mb_used: Mapped[int] = mapped_column(BigInteger, default=0)
    enclaves: Mapped[int] = mapped_column(Integer, default=0)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime())
    # ``tee_kinds`` is what the host CLAIMS; these are the kinds ("snp", "tdx", "sim"
    # for simulated evidence) of evidence the control plane verified in a receipt from an
    # enclave on this host, and when (docs/adr/0019)
    tee_verified: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    tee_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # an operator's `sealroom host drain`: nothing new is placed here, what runs finishes
    draining: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Computation(Base):
    __tablename__ = "computations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # creation order (FIFO queue) without relying on clock resolution
    number: Mapped[int] = mapped_column(BigInteger, unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), index=True)
    # for "destroyed": the final state it came from ("completed" or "failed")
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    manifest_hash: Mapped[str] = mapped_column(String(64))
    tee: Mapped[str] = mapped_column(String(16))
    queue: Mapped[bool] = mapped_column(Boolean, default=False)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(BigInteger)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    disk_mb: Mapped[int] = mapped_column(BigInteger, default=0)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), nullable=True, index=True)
    enclave_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    events_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # what the receipt the control plane verified (signature, evidence against the
    # manifest's policy) says: None = no verified receipt yet
    receipt_ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    receipt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("computation_id", "seq", name="uq_events_seq"),
        UniqueConstraint("computation_id", "enclave_seq", name="uq_events_enclave_seq"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    computation_id: Mapped[str] = mapped_column(
        ForeignKey("computations.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    # the enclave's own sequence number for forwarded events (stored once per seq)
    enclave_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    type: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[str] = mapped_column(Text, default="")


class Challenge(Base):
    __tablename__ = "challenges"
    challenge: Mapped[str] = mapped_column(String(64), primary_key=True)
    computation_id: Mapped[str] = mapped_column(
        ForeignKey("computations.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Blob(Base):
    __tablename__ = "blobs"
    computation_id: Mapped[str] = mapped_column(
        ForeignKey("computations.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime())


Index("ix_computations_host_state", Computation.host_id, Computation.state)


class Counter(Base):
    """Named counters. "placement" is bumped by every transaction that changes what
    placement sees (host resources or state, allocations), so a process can keep an
    in-memory view of host capacities and know when another replica changed it."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class WebSession(Base):
    """A dashboard login (docs/adr/0036): made from an API key, stored like one (SHA-256
    of the cookie's random token), and valid only while that key is not revoked."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TlogEntry(Base):
    """One transparency-log entry (docs/adr/0031): ``data`` is the exact logged bytes
    (canonical JSON, public facts only), ``leaf_hash`` its RFC 9162 leaf hash."""

    __tablename__ = "tlog_entries"
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TlogNode(Base):
    """The hash of the perfect subtree of 2**level entries starting at idx * 2**level
    (level >= 1; level 0 is ``TlogEntry.leaf_hash``), written once when it completes."""

    __tablename__ = "tlog_nodes"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class RegisteredModel(Base):
    """A model in the registry (docs/adr/0040): its pinned spec's facts. The weights are
    not stored here; an enclave serving the model proves the spec hash in its evidence."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "model_version"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    licence: Mapped[str] = mapped_column(String(200))
    spec_hash: Mapped[str] = mapped_column(String(64))
    spec: Mapped[str] = mapped_column(Text)  # the spec's JSON, as registered
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
