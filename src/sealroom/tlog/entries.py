"""What the sealroom log holds: one entry per public fact, as canonical JSON (RFC 8785)::

    {"kind": <kind>, "payload": {...}}

The leaf hash is RFC 9162's ``SHA-256(0x00 || entry)``. Entries are public: anyone may
fetch them (tiles, entry bundles), so a payload carries hashes, identifiers and verdicts,
never a secret, a plaintext input or result, or a sealed blob (docs/adr/0031).
An entry is at most 65535 bytes (the uint16 length prefix of a tlog-tiles entry bundle).
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from sealroom.crypto.canonical import canonical_json
from sealroom.errors import InvalidInputError
from sealroom.tlog.tiles import MAX_ENTRY


class Kind(StrEnum):
    RECEIPT = "receipt"
    SERVICE_DEPLOYMENT = "service-deployment"
    HEARTBEAT = "heartbeat"
    KEY_RELEASE = "key-release"
    LOCKDOWN = "lockdown"
    RUNTIME_MEASUREMENT = "runtime-measurement"


def encode_entry(kind: Kind | str, payload: dict[str, Any]) -> bytes:
    """The exact bytes logged for (kind, payload)."""
    try:
        k = Kind(kind)
    except ValueError as e:
        raise InvalidInputError(
            f"log entry kind {str(kind)[:40]!r} is not one of {', '.join(Kind)}",
            code="tlog-kind",
        ) from e
    if not isinstance(payload, dict):
        raise InvalidInputError("log entry payload must be a JSON object", code="tlog-entry")
    data = canonical_json({"kind": k.value, "payload": payload})
    if len(data) > MAX_ENTRY:
        raise InvalidInputError(
            f"log entry is {len(data)} bytes, at most {MAX_ENTRY} (log hashes, not documents)",
            code="tlog-entry-too-large",
        )
    return data


def decode_entry(data: bytes) -> tuple[Kind, dict[str, Any]]:
    try:
        doc = json.loads(data)
        kind, payload = Kind(doc["kind"]), doc["payload"]
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidInputError(f"not a sealroom log entry: {e}", code="tlog-entry") from e
    if not isinstance(payload, dict) or canonical_json(doc) != data:
        raise InvalidInputError("not a canonical sealroom log entry", code="tlog-entry")
    return kind, payload


def receipt_payload(receipt: bytes) -> dict[str, Any]:
    """The log payload of a receipt, computed from the receipt alone (so a verifier holding
    only the receipt recomputes the leaf): the SHA-256 of its canonical JSON (whitespace
    and key order do not matter; the enclave's signature covers the canonical payload)
    and the manifest it is for."""
    try:
        doc = json.loads(receipt)
    except ValueError as e:
        raise InvalidInputError(f"receipt is not JSON: {e}", code="receipt-malformed") from e
    if not isinstance(doc, dict):
        raise InvalidInputError("receipt is not a JSON object", code="receipt-malformed")
    inner = doc.get("payload")
    manifest_hash = inner.get("manifest_hash") if isinstance(inner, dict) else None
    if not isinstance(manifest_hash, str):
        raise InvalidInputError("receipt has no payload.manifest_hash", code="receipt-malformed")
    return {
        "manifest_hash": manifest_hash,
        "receipt_sha256": hashlib.sha256(canonical_json(doc)).hexdigest(),
    }


def receipt_entry(receipt: bytes) -> bytes:
    return encode_entry(Kind.RECEIPT, receipt_payload(receipt))
