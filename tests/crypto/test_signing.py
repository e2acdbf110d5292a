"""Signed JSON, upload messages and the enclave keys digest: domain separation, binding
of every field, and typed errors."""

from __future__ import annotations

import copy
import hashlib
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealroom.crypto.keys import PartyKeys
from sealroom.crypto.signing import (
    RECEIPT_DOMAIN,
    keys_digest,
    signed_json,
    upload_message,
    verify_signed_json,
)
from sealroom.errors import AttestationError, InvalidInputError, MalformedEvidenceError

KEY = Ed25519PrivateKey.generate()
PAYLOAD: dict[str, Any] = {"manifest_hash": "00" * 32, "exit": 0, "consumers": {"alice": "ab"}}
MH = hashlib.sha256(b"manifest").digest()
SHA = hashlib.sha256(b"data").digest()
KD = hashlib.sha256(b"enclave keys").digest()


def test_signed_json_round_trip() -> None:
    doc = signed_json(PAYLOAD, KEY, RECEIPT_DOMAIN)
    assert doc["alg"] == "Ed25519" and len(bytes.fromhex(doc["signature"])) == 64
    assert verify_signed_json(doc, KEY.public_key(), RECEIPT_DOMAIN) == PAYLOAD


def test_signature_survives_key_reordering() -> None:
    doc = signed_json(PAYLOAD, KEY, RECEIPT_DOMAIN)
    doc["payload"] = dict(reversed(list(doc["payload"].items())))
    assert verify_signed_json(doc, KEY.public_key(), RECEIPT_DOMAIN) == PAYLOAD


def _tampered_payload(doc: dict[str, Any]) -> dict[str, Any]:
    doc["payload"]["exit"] = 1
    return doc


def _other_signer(doc: dict[str, Any]) -> dict[str, Any]:
    return signed_json(doc["payload"], Ed25519PrivateKey.generate(), RECEIPT_DOMAIN)


def _signature_flipped(doc: dict[str, Any]) -> dict[str, Any]:
    sig = bytearray.fromhex(doc["signature"])
    sig[0] ^= 1
    doc["signature"] = sig.hex()
    return doc


def _other_domain(doc: dict[str, Any]) -> dict[str, Any]:
    return signed_json(doc["payload"], KEY, b"sealroom/other/v1\0")


@pytest.mark.parametrize(
    "alter", [_tampered_payload, _other_signer, _signature_flipped, _other_domain]
)
def test_signature_invalid(alter: Any) -> None:
    doc = alter(copy.deepcopy(signed_json(PAYLOAD, KEY, RECEIPT_DOMAIN)))
    with pytest.raises(AttestationError) as ei:
        verify_signed_json(doc, KEY.public_key(), RECEIPT_DOMAIN)
    assert ei.value.code == "signature-invalid"


@pytest.mark.parametrize(
    "doc",
    [
        "not an object",
        {"payload": {}, "signature": "00" * 64},
        {"payload": {}, "signature": "00" * 64, "alg": "Ed25519", "extra": 1},
        {"payload": {}, "signature": "00" * 64, "alg": "ES256"},
        {"payload": [], "signature": "00" * 64, "alg": "Ed25519"},
        {"payload": {}, "signature": "zz", "alg": "Ed25519"},
        {"payload": {}, "signature": 5, "alg": "Ed25519"},
        {"payload": {}, "signature": "00" * 63, "alg": "Ed25519"},
        {"payload": {"f": 0.5}, "signature": "00" * 64, "alg": "Ed25519"},
    ],
)
def test_malformed_signed_document(doc: object) -> None:
    with pytest.raises(MalformedEvidenceError):
        verify_signed_json(doc, KEY.public_key(), RECEIPT_DOMAIN)


@pytest.mark.parametrize("domain", [b"", b"\0", b"no-terminator", b"two\0nuls\0"])
def test_bad_domain_is_programmer_error(domain: bytes) -> None:
    with pytest.raises(ValueError, match="domain"):
        signed_json(PAYLOAD, KEY, domain)


def test_upload_message_layout() -> None:
    msg = upload_message(MH, "dataset-a", SHA, 1234, KD)

    def lp(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    assert msg == (
        lp(b"sealroom/upload/v1")
        + lp(MH)
        + lp(b"dataset-a")
        + lp(SHA)
        + lp(struct.pack(">Q", 1234))
        + lp(KD)
    )


@pytest.mark.parametrize(
    "changed",
    [
        {"manifest_hash": hashlib.sha256(b"other computation").digest()},
        {"slot": "algorithm"},
        {"sha256": hashlib.sha256(b"other data").digest()},
        {"size": 1235},
        {"enclave_keys_digest": hashlib.sha256(b"other enclave").digest()},
    ],
    ids=lambda d: next(iter(d)),
)
def test_replayed_upload_signature(changed: dict[str, Any]) -> None:
    provider = PartyKeys.generate("provider")
    base: dict[str, Any] = {
        "manifest_hash": MH,
        "slot": "dataset-a",
        "sha256": SHA,
        "size": 1234,
        "enclave_keys_digest": KD,
    }
    sig = provider.sign(upload_message(**base))
    provider.public.verify(sig, upload_message(**base))
    with pytest.raises(AttestationError) as ei:
        provider.public.verify(sig, upload_message(**{**base, **changed}))
    assert ei.value.code == "signature-invalid"


def test_receipt_signature_does_not_verify_as_upload_signature() -> None:
    party = PartyKeys.generate("p")
    upload = upload_message(MH, "a", SHA, 1, KD)
    # An upload signature cannot pass as a signed document, and vice versa.
    doc = {"payload": {"x": 1}, "signature": party.sign(upload).hex(), "alg": "Ed25519"}
    with pytest.raises(AttestationError):
        verify_signed_json(doc, party.ed25519.public_key(), RECEIPT_DOMAIN)
    receipt = signed_json({"x": 1}, party.ed25519, RECEIPT_DOMAIN)
    with pytest.raises(AttestationError):
        party.public.verify(bytes.fromhex(receipt["signature"]), upload)
    assert not upload.startswith(RECEIPT_DOMAIN[:1])


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((MH[:31], "a", SHA, 1, KD), "manifest_hash"),
        ((MH, "a", SHA + b"\0", 1, KD), "sha256"),
        ((MH, "a", SHA, 1, b""), "enclave_keys_digest"),
        ((MH, "", SHA, 1, KD), "slot"),
        ((MH, "a" * 65, SHA, 1, KD), "slot"),
        ((MH, "a", SHA, -1, KD), "size"),
        ((MH, "a", SHA, 2**64, KD), "size"),
        ((MH, "a", SHA, True, KD), "size"),
    ],
)
def test_upload_message_rejects_bad_fields(args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        upload_message(*args)


def test_keys_digest_binds_each_key() -> None:
    spki, ed, x = b"\x30\x2a" + bytes(42), bytes(range(32)), bytes(range(32, 64))
    d = keys_digest(spki, ed, x)
    assert len(d) == 32
    assert keys_digest(spki, ed, x) == d
    assert keys_digest(spki + b"\0", ed, x) != d
    assert keys_digest(spki, x, ed) != d
    assert keys_digest(spki, ed, bytes(32)) != d


def test_keys_digest_rejects_bad_keys() -> None:
    with pytest.raises(InvalidInputError, match="tls_spki_der"):
        keys_digest(b"", bytes(32), bytes(32))
    with pytest.raises(InvalidInputError, match="x25519"):
        keys_digest(b"spki", bytes(32), bytes(31))
