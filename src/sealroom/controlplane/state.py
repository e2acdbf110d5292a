"""The control plane's services wired together (one instance per app)."""

from __future__ import annotations

import logging
from pathlib import Path

from sealroom.controlplane.config import Settings
from sealroom.controlplane.services.auth import AuthService
from sealroom.controlplane.services.blobs import BlobStore
from sealroom.controlplane.services.computations import ComputationService
from sealroom.controlplane.services.hosts import HostService
from sealroom.controlplane.services.receipts import ReceiptVerifier
from sealroom.controlplane.services.tlog import TransparencyLog
from sealroom.controlplane.store.db import Store

log = logging.getLogger("sealroom.controlplane")


class ControlPlane:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.database_url)
        self.store.migrate()
        self.blobs = BlobStore(settings.blob_dir)
        self.auth = AuthService(self.store, settings)
        self.computations = ComputationService(self.store, settings, self.blobs)
        self.receipts = ReceiptVerifier(settings)
        # the transparency log (docs/adr/0031): other services append with self.tlog.append
        self.tlog = TransparencyLog(self.store, settings)
        self.hosts = HostService(self.computations, self.receipts, self.tlog)
        self.hosts.log_unlogged_receipts()
        self.bootstrap_key = self.auth.bootstrap()

    def tick(self) -> None:
        """One pass of the background work: lost hosts, then the queue."""
        self.hosts.check_lost()
        self.computations.schedule_queue()

    def close(self) -> None:
        self.store.dispose()
