"""Control plane settings (a frozen dataclass; the CLI and tests build one)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    # None: SEALROOM_DB_URL, else sqlite:///<data_dir>/sealroom.db
    db_url: str | None = None
    # None: SEALROOM_ADMIN_KEY (if set) or a freshly generated key at first start
    admin_key: str | None = None
    agent_timeout: float = 15.0
    heartbeat_interval: float = 3.0
    # how often the background task looks for lost hosts and queued work (0: never; tests
    # drive ``ControlPlane.tick()`` themselves)
    tick_interval: float = 1.0
    join_token_ttl: float = 3600.0
    challenge_ttl: float = 300.0
    clock: Callable[[], datetime] = field(default=utcnow, compare=False)
    print_bootstrap_key: bool = True
    # the sim authority whose root this control plane trusts when it verifies receipts of
    # simulated enclaves (None: $SEALROOM_HOME/sim-authority, if it exists). The
    # operator's choice, never the presenter's.
    sim_authority: Path | None = None
    # after a control-plane start, hosts get this long to heartbeat before they count as
    # lost (their agents back off while it was down; docs/adr/0019)
    startup_grace: float = 60.0
    # default per-account quotas over unfinished computations (None: unlimited); an
    # admin sets an account's own with PUT /api/v1/accounts/{id}/quota
    quota_computations: int | None = None
    quota_vcpus: int | None = None
    quota_memory_mb: int | None = None
    # the transparency log's origin line and checkpoint key name (C2SP tlog-checkpoint: a
    # schema-less URL without spaces or '+')
    log_origin: str = field(
        default_factory=lambda: os.environ.get("SEALROOM_LOG_ORIGIN") or "sealroom.local/log"
    )
    # the log's Ed25519 checkpoint key (PKCS#8 PEM, created 0600 if absent). None:
    # SEALROOM_LOG_KEY, else <data_dir>/tlog-ed25519.pem. Replicas sharing one database
    # must share this key (and origin): the log has one identity (docs/adr/0031).
    log_key: Path | None = None
    # when set, GET /metrics needs "Authorization: Bearer <this token>" (None: open, for a
    # scraper on a private network; the metrics carry counts, never ids or secrets)
    metrics_token: str | None = field(default=None, repr=False)
    # the attestation service parties can send evidence to (``sealroom kbs serve``; ADR
    # 0025), named by GET /api/v1/compute/attestation's verification_service (None: none)
    attestation_service: str | None = field(
        default_factory=lambda: os.environ.get("SEALROOM_ATTESTATION_SERVICE") or None
    )

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        env = os.environ.get("SEALROOM_DB_URL")
        if env:
            return env
        return f"sqlite:///{Path(self.data_dir).resolve() / 'sealroom.db'}"

    @property
    def bootstrap_admin_key(self) -> str | None:
        return self.admin_key or os.environ.get("SEALROOM_ADMIN_KEY") or None

    @property
    def log_key_path(self) -> Path:
        if self.log_key is not None:
            return Path(self.log_key)
        env = os.environ.get("SEALROOM_LOG_KEY")
        return Path(env) if env else Path(self.data_dir) / "tlog-ed25519.pem"

    @property
    def blob_dir(self) -> Path:
        return Path(self.data_dir) / "blobs"
