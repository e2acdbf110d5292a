"""Enclave backends of the host agent. ``process``: the runtime as a separate, limited
process with the sim TEE (this machine); a ``qemu`` backend (real SNP/TDX guests) would
offer the same start/adopt/poll/stop surface."""

from __future__ import annotations

from sealroom.hostagent.backends.process import (
    ProcessBackend,
    ProcessEnclave,
    Timeouts,
)

__all__ = ["ProcessBackend", "ProcessEnclave", "Timeouts"]
