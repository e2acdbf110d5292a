"""The enclave's wire protocol: paths, headers, the exact bytes parties sign and the
enclave's public keys.

Shared by the runtime (trusted), the party client and the control plane; pure, no I/O.

HTTPS endpoints (the TLS certificate is the enclave's own; clients pin it after
verifying evidence that binds its key). /attestation, /status, /events and /receipt
answer any TLS client, so they carry public lifecycle facts only (phase, slots, limits,
runtime-worded reasons); anything derived from the algorithm is sealed:

    GET  /attestation?nonce=HEX   fresh evidence + the enclave's public keys + manifest
    GET  /status                  state, slots, limits
    PUT  /slots/{name}            streaming upload (Content-Length, X-Sealroom-Sha256,
                                  X-Sealroom-Signature over upload_message(...))
    GET  /events?after=N&wait=S   ordered events after sequence N (long-poll up to S s)
    GET  /challenge               a one-time nonce for result requests
    GET  /result/{consumer}       the consumer's sealed result (X-Sealroom-Challenge,
                                  X-Sealroom-Signature over result_request_message(...))
    GET  /log/{reader}            the run log sealed to a consumer or log reader (same
                                  headers, signature over log_request_message(...)),
                                  once the run ended, completed or failed
    GET  /receipt                 the signed receipt (after completion or failure)
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sealroom.crypto.signing import keys_digest
from sealroom.errors import MalformedEvidenceError

H_SHA256 = "X-Sealroom-Sha256"
H_SIGNATURE = "X-Sealroom-Signature"
H_CHALLENGE = "X-Sealroom-Challenge"
H_RESULT_SHA256 = "X-Sealroom-Sealed-Sha256"

RESULT_REQUEST_DOMAIN = b"sealroom/result-request/v1"
RECEIPT_DOMAIN = b"sealroom/receipt/v1\0"
RESULT_INFO_DOMAIN = b"sealroom/result/v1"
LOG_REQUEST_DOMAIN = b"sealroom/log-request/v1"
LOG_INFO_DOMAIN = b"sealroom/log/v1"
ALGORITHM_SLOT = "algorithm"
#: A run log's plaintext is at most this long (the sandbox keeps 64 KiB of output; JSON
#: escaping at most sextuples it); readers and blob stores bound what they accept by it.
MAX_RUN_LOG_BYTES = 1 << 20

#: Event types any TLS client may read (GET /events, unauthenticated) and the host may
#: see (the runtime's stdout lines). Every message is written by the runtime from public
#: lifecycle facts; what the algorithm prints is never an event (it is sealed, see
#: docs/adr/0017-sealed-run-logs.md).
PUBLIC_EVENT_TYPES = frozenset(
    {
        "started",
        "upload_accepted",
        "upload_rejected",
        "run_started",
        "run_ended",
        "run_failed",
        "completed",
        "failed",
        "evidence_failed",
        "kbs_filled",  # a KBS-sourced dataset slot filled by the enclave (docs/adr/0027)
        "kbs_fill_failed",
    }
)
#: Data fields an event may carry besides seq/time/type/message (runtime-chosen values).
PUBLIC_EVENT_FIELDS = ("slot", "code", "ok")


def upload_accepted_message(slot: str, size: int) -> str:
    """The public message of an ``upload_accepted`` event (``filled_slots`` reads it)."""
    return f"slot {slot!r} filled ({size} bytes)"


def slot_names(manifest_doc: Any) -> list[str]:
    """A manifest document's slots: ``algorithm`` and each dataset, in order."""
    doc = manifest_doc if isinstance(manifest_doc, dict) else {}
    datasets = doc.get("datasets") or []
    return ["algorithm"] + [str(d.get("name")) for d in datasets if isinstance(d, dict)]


def kbs_filled_message(slot: str, size: int, resource: str) -> str:
    """The public message of a ``kbs_filled`` event: the enclave filled a KBS-sourced
    slot itself (key from the broker's ``resource``; ``filled_slots`` reads it)."""
    return f"{upload_accepted_message(slot, size)} from the key broker ({resource})"


def filled_slots(events: Iterable[tuple[str, str]], slots: Iterable[str]) -> set[str]:
    """Which of ``slots`` the enclave reported filled, from (type, message) of its public
    events as the control plane relays them."""
    names = list(slots)
    return {
        n
        for kind, message in events
        if kind in ("upload_accepted", "kbs_filled")
        for n in names
        if message.startswith(f"slot {n!r} filled (")
    }


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def result_request_message(
    manifest_hash: bytes, consumer: str, keys_digest: bytes, challenge: bytes
) -> bytes:
    """What a consumer signs to fetch its sealed result: bound to this computation,
    this enclave (its keys digest) and a one-time server challenge."""
    return b"".join(
        _field(x)
        for x in (RESULT_REQUEST_DOMAIN, manifest_hash, consumer.encode(), keys_digest, challenge)
    )


def log_request_message(
    manifest_hash: bytes, reader: str, keys_digest: bytes, challenge: bytes
) -> bytes:
    """What a consumer or log reader signs to fetch its sealed run log (its own domain:
    a result request's signature cannot fetch a log, nor the reverse)."""
    return b"".join(
        _field(x)
        for x in (LOG_REQUEST_DOMAIN, manifest_hash, reader.encode(), keys_digest, challenge)
    )


def log_info(manifest_hash: bytes, reader: str) -> bytes:
    """HPKE ``info`` for a sealed run log: never opens as a result, another computation's
    log or another reader's."""
    return LOG_INFO_DOMAIN + manifest_hash + reader.encode()


def result_info(manifest_hash: bytes, consumer: str) -> bytes:
    """HPKE ``info`` for a consumer's sealed result: it cannot be opened as another
    computation's or another consumer's result."""
    return RESULT_INFO_DOMAIN + manifest_hash + consumer.encode()


def receipt_nonce(core_canonical: bytes) -> bytes:
    """The nonce for the receipt's evidence: the hash of the receipt's own content, so
    the evidence binds the receipt (and, through REPORT_DATA, the receipt key)."""
    return hashlib.sha256(b"sealroom/receipt-evidence/v1\0" + core_canonical).digest()


@dataclass(frozen=True)
class EnclavePublicKeys:
    tls_spki: bytes
    ed25519: bytes
    x25519: bytes

    @property
    def digest(self) -> bytes:
        return keys_digest(self.tls_spki, self.ed25519, self.x25519)

    def to_json_obj(self) -> dict[str, str]:
        return {
            "tls_spki": self.tls_spki.hex(),
            "ed25519": self.ed25519.hex(),
            "x25519": self.x25519.hex(),
        }

    @staticmethod
    def from_json_obj(obj: Any) -> EnclavePublicKeys:
        try:
            keys = EnclavePublicKeys(
                bytes.fromhex(obj["tls_spki"]),
                bytes.fromhex(obj["ed25519"]),
                bytes.fromhex(obj["x25519"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MalformedEvidenceError(f"enclave public keys are malformed: {e}") from e
        if len(keys.ed25519) != 32 or len(keys.x25519) != 32:
            raise MalformedEvidenceError("enclave Ed25519/X25519 keys must be 32 bytes")
        return keys

    def tls_spki_digest(self) -> str:
        """SHA-256 of the TLS key's SubjectPublicKeyInfo, hex (how keys are shown)."""
        return hashlib.sha256(self.tls_spki).hexdigest()

    def ed25519_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.ed25519)
