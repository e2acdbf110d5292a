"""Signed JSON documents, the upload message a provider signs, and the enclave keys digest.

Every Ed25519 signature in sealroom is over a message that starts with a domain string
naming what is signed, so a signature made for one purpose never verifies for another:

- signed JSON (receipts...): ``domain || canonical_json(payload)``, where ``domain`` is
  ASCII ending in one NUL (e.g. ``b"sealroom/receipt/v1\\0"``);
- uploads: :func:`upload_message`, which starts with ``uint32(18) || "sealroom/upload/v1"``
  (its first byte is 0x00, never the first byte of a signed-JSON domain).

Binary messages are built from length-prefixed fields, ``lp(x) = uint32_be(len(x)) || x``,
so no two different field tuples give the same bytes.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sealroom.crypto.canonical import canonical_json
from sealroom.errors import AttestationError, InvalidInputError, MalformedEvidenceError

ALG = "Ed25519"
UPLOAD_DOMAIN = b"sealroom/upload/v1"
KEYS_DOMAIN = b"sealroom/enclave-keys/v1"
RECEIPT_DOMAIN = b"sealroom/receipt/v1\0"
MAX_SLOT_NAME = 64


def lp(data: bytes) -> bytes:
    """A length-prefixed field: uint32 big-endian length, then the bytes."""
    if len(data) >= 2**32:
        raise ValueError("field longer than 2**32 - 1 bytes")
    return struct.pack(">I", len(data)) + data


def _check_domain(domain: bytes) -> None:
    # Programmer misuse, not input: domains are constants in the code.
    if (
        not isinstance(domain, bytes)
        or len(domain) < 2
        or not domain.endswith(b"\0")
        or b"\0" in domain[:-1]
        or not domain[:-1].isascii()
    ):
        raise ValueError(f"signing domain must be ASCII ending in a single NUL, got {domain!r}")


def signed_json(obj: dict[str, Any], key: Ed25519PrivateKey, domain: bytes) -> dict[str, Any]:
    """``{"payload": obj, "signature": hex, "alg": "Ed25519"}``, the signature over
    ``domain || canonical_json(obj)`` (RFC 8785)."""
    _check_domain(domain)
    if not isinstance(obj, dict):
        raise TypeError("signed_json payload must be a dict")
    message = domain + canonical_json(obj)
    return {"payload": obj, "signature": key.sign(message).hex(), "alg": ALG}


def verify_signed_json(doc: object, public: Ed25519PublicKey, domain: bytes) -> dict[str, Any]:
    """Return the payload of a :func:`signed_json` document signed by ``public`` for
    ``domain``. MalformedEvidenceError for structure, AttestationError(code=
    "signature-invalid") for a signature that does not verify."""
    _check_domain(domain)
    if not isinstance(doc, dict):
        raise MalformedEvidenceError(
            f"signed document: must be an object, got {type(doc).__name__}",
            code="signed-json-malformed",
        )
    keys = set(doc)
    if keys != {"payload", "signature", "alg"}:
        raise MalformedEvidenceError(
            f"signed document: has fields {sorted(str(k) for k in keys)}, want exactly "
            "['alg', 'payload', 'signature']",
            code="signed-json-malformed",
        )
    if doc["alg"] != ALG:
        raise MalformedEvidenceError(
            f"signed document: alg is {doc['alg']!r}, want {ALG!r}", code="signed-json-malformed"
        )
    payload = doc["payload"]
    if not isinstance(payload, dict):
        raise MalformedEvidenceError(
            f"signed document: payload must be an object, got {type(payload).__name__}",
            code="signed-json-malformed",
        )
    sig_hex = doc["signature"]
    try:
        if not isinstance(sig_hex, str):
            raise ValueError
        signature = bytes.fromhex(sig_hex)
    except ValueError as e:
        raise MalformedEvidenceError(
            "signed document: signature must be a hex string", code="signed-json-malformed"
        ) from e
    if len(signature) != 64:
        raise MalformedEvidenceError(
            f"signed document: signature is {len(signature)} bytes, want 64",
            code="signed-json-malformed",
        )
    try:
        message = domain + canonical_json(payload)
    except InvalidInputError as e:
        raise MalformedEvidenceError(
            f"signed document: payload is not canonicalisable JSON: {e.message}",
            code="signed-json-malformed",
        ) from e
    try:
        public.verify(signature, message)
    except InvalidSignature as e:
        raise AttestationError(
            f"signed document: the Ed25519 signature does not verify for "
            f"{domain[:-1].decode()!r} under the expected key",
            code="signature-invalid",
        ) from e
    return payload


def _fixed(value: bytes, size: int, field: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        got = len(value) if isinstance(value, bytes) else type(value).__name__
        raise InvalidInputError(f"upload {field}: {got} bytes, want {size}", code="invalid-upload")
    return value


def upload_message(
    manifest_hash: bytes, slot: str, sha256: bytes, size: int, enclave_keys_digest: bytes
) -> bytes:
    """The exact bytes a provider signs (Ed25519) for one upload::

        lp("sealroom/upload/v1") || lp(manifest_hash[32]) || lp(utf8(slot))
        || lp(sha256[32]) || lp(uint64_be(size)) || lp(enclave_keys_digest[32])

    It names the computation, the slot, the content and the one enclave (by its keys),
    so it cannot be replayed to another computation, slot or enclave.
    """
    _fixed(manifest_hash, 32, "manifest_hash")
    _fixed(sha256, 32, "sha256")
    _fixed(enclave_keys_digest, 32, "enclave_keys_digest")
    if not isinstance(slot, str) or not 1 <= len(slot) <= MAX_SLOT_NAME:
        raise InvalidInputError(
            f"upload slot: {slot!r} is not a slot name (1-{MAX_SLOT_NAME} characters)",
            code="invalid-upload",
        )
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**64:
        raise InvalidInputError(f"upload size: {size!r}, want 0..2**64-1", code="invalid-upload")
    return b"".join(
        (
            lp(UPLOAD_DOMAIN),
            lp(manifest_hash),
            lp(slot.encode("utf-8")),
            lp(sha256),
            lp(struct.pack(">Q", size)),
            lp(enclave_keys_digest),
        )
    )


def keys_digest(tls_spki_der: bytes, receipt_ed25519: bytes, x25519: bytes) -> bytes:
    """Digest of the enclave's public keys, bound in REPORT_DATA and in upload signatures::

        SHA-256(lp("sealroom/enclave-keys/v1") || lp(tls_spki_der) || lp(receipt_ed25519[32])
                || lp(x25519[32]))

    ``tls_spki_der`` is the DER SubjectPublicKeyInfo of the TLS certificate's key (what a
    client pins), the other two are raw 32-byte public keys.
    """
    if not isinstance(tls_spki_der, bytes) or not tls_spki_der:
        raise InvalidInputError("enclave keys: tls_spki_der is empty", code="invalid-keys")
    for field, value in (("receipt_ed25519", receipt_ed25519), ("x25519", x25519)):
        if not isinstance(value, bytes) or len(value) != 32:
            raise InvalidInputError(
                f"enclave keys: {field} must be a raw 32-byte public key", code="invalid-keys"
            )
    return hashlib.sha256(
        lp(KEYS_DOMAIN) + lp(tls_spki_der) + lp(receipt_ed25519) + lp(x25519)
    ).digest()
