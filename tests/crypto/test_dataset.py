"""Provider-encrypted datasets (KBS-sourced): format, streaming, every alteration refused."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from sealroom.crypto.dataset import (
    MAGIC,
    decrypt_dataset,
    encrypt_dataset,
    read_header,
)
from sealroom.errors import AttestationError, InvalidInputError, MalformedEvidenceError

KEY = bytes(range(32))


def _enc(data: bytes, chunk_size: int = 64) -> bytes:
    out = io.BytesIO()
    summary = encrypt_dataset(
        io.BytesIO(data), out, KEY, key_id="ds1", version=3, chunk_size=chunk_size
    )
    assert summary.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert summary.plaintext_size == len(data) and summary.ciphertext_size == len(out.getvalue())
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 640, 1000])
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    blob = _enc(data)
    src = io.BytesIO(blob)
    header = read_header(src)
    assert (header.key_id, header.version, header.chunk_size) == ("ds1", 3, 64)
    out = io.BytesIO()
    assert decrypt_dataset(src, out, KEY, header) == size
    assert out.getvalue() == data


def test_first_chunk_decrypts_with_an_independent_reading_of_the_format() -> None:
    # The spec in the module doc, done by hand with pyca: HKDF, then AES-GCM per chunk.
    data = b"x" * 10
    blob = _enc(data)
    header = read_header(io.BytesIO(blob))
    key = HKDF(hashes.SHA256(), 32, header.salt, b"sealroom/kbs-dataset/v1\0").derive(KEY)
    nonce = header.nonce_prefix + (0).to_bytes(4, "big") + b"\x01"
    chunk = blob[len(header.raw) :]
    assert AESGCM(key).decrypt(nonce, chunk, hashlib.sha256(header.raw).digest()) == data


def _dec(blob: bytes, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    decrypt_dataset(io.BytesIO(blob), out, key)
    return out.getvalue()


def test_wrong_key_refused() -> None:
    with pytest.raises(AttestationError) as e:
        _dec(_enc(b"secret"), bytes(32))
    assert e.value.code == "kbs-dataset-invalid"


@pytest.mark.parametrize(
    "damage",
    [
        "flipped_ciphertext_byte",
        "truncated_at_chunk_boundary",
        "appended_bytes",
        "header_key_id_edited",
        "chunks_swapped",
    ],
)
def test_alteration_refused(damage: str) -> None:
    blob = bytearray(_enc(os.urandom(300)))
    hlen = len(read_header(io.BytesIO(bytes(blob))).raw)
    block = 64 + 16
    if damage == "flipped_ciphertext_byte":
        blob[-1] ^= 1
    elif damage == "truncated_at_chunk_boundary":
        del blob[hlen + 2 * block :]
    elif damage == "appended_bytes":
        blob += b"\0" * 20
    elif damage == "header_key_id_edited":
        blob = bytearray(bytes(blob).replace(b'"ds1"', b'"ds2"'))
    elif damage == "chunks_swapped":
        a, b = blob[hlen : hlen + block], blob[hlen + block : hlen + 2 * block]
        blob[hlen : hlen + 2 * block] = b + a
    with pytest.raises(AttestationError):
        _dec(bytes(blob))


def test_not_a_dataset_refused() -> None:
    with pytest.raises(MalformedEvidenceError):
        _dec(b"SRSEAL1\0" + b"\0" * 100)
    with pytest.raises(AttestationError):
        _dec(MAGIC + (5000).to_bytes(4, "big"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_header_parser_never_crashes(data: bytes) -> None:
    try:
        read_header(io.BytesIO(MAGIC + len(data).to_bytes(4, "big") + data))
    except (AttestationError, InvalidInputError):
        pass
