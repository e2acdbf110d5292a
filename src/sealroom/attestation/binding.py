"""report_data binding: what a sealroom enclave puts in its 64-byte REPORT_DATA.

    REPORT_DATA = SHA-512("sealroom/report-data/v1" || manifest_hash || keys_digest || nonce)

``manifest_hash`` is 32 bytes (SHA-256 of the canonical manifest), ``keys_digest`` is 32
bytes (SHA-256 over the enclave's public keys, see the runtime), ``nonce`` is the
verifier's challenge (any length up to 64 bytes). The fixed-length prefix fields make the
concatenation unambiguous. The same function is used by the runtime that produces
evidence and by every verifier that checks it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DOMAIN = b"sealroom/report-data/v1"


@dataclass(frozen=True)
class ReportDataInputs:
    manifest_hash: bytes
    keys_digest: bytes

    def __post_init__(self) -> None:
        if len(self.manifest_hash) != 32:
            raise ValueError("manifest_hash must be 32 bytes")
        if len(self.keys_digest) != 32:
            raise ValueError("keys_digest must be 32 bytes")


def sealroom_report_data(inputs: ReportDataInputs, nonce: bytes) -> bytes:
    if len(nonce) > 64:
        raise ValueError("nonce must be at most 64 bytes")
    return hashlib.sha512(DOMAIN + inputs.manifest_hash + inputs.keys_digest + nonce).digest()


def nonce_report_data(nonce: bytes, size: int = 64) -> bytes:
    """The plain convention: the nonce itself, zero-padded to the field size."""
    if len(nonce) > size:
        raise ValueError(f"nonce must be at most {size} bytes")
    return nonce + bytes(size - len(nonce))
