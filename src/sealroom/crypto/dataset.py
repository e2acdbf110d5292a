"""Datasets encrypted by their provider under a key the key broker releases (KBS-sourced).

File format v1 (integers big-endian)::

    offset size  field
    0      8     magic        b"SRKBSD1\\0"
    8      4     header_len   1..4096
    12     n     header       RFC 8785 JSON: {"alg": "A256GCM-STREAM", "chunk_size",
                              "key_id", "version", "salt": hex32, "nonce_prefix": hex7}
    12+n   ...   chunks       AES-256-GCM(content_key, nonce_i, chunk_i, chunk_aad)

    content_key = HKDF-SHA256(ikm = the KMS key version's 32 bytes, salt,
                              info = "sealroom/kbs-dataset/v1\\0")
    nonce_i     = nonce_prefix || uint32(i) || last_flag
    chunk_aad   = SHA-256(bytes 0 .. 12+n)

The chunks are the STREAM construction of :mod:`sealroom.crypto.sealing` (same counter,
last flag and header-bound AAD); the header names the key id and version so the enclave
knows what to ask the broker for, and it is authenticated by every chunk. A fresh salt per
file gives a fresh content key, so two files under one KMS key never share a nonce space.
Primitives are pyca/cryptography's AESGCM and HKDF.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sealroom.crypto.canonical import canonical_json
from sealroom.crypto.sealing import (
    CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    NONCE_PREFIX_SIZE,
    Writer,
    decrypt_chunks,
    encrypt_chunks,
)
from sealroom.errors import AttestationError, MalformedEvidenceError

MAGIC = b"SRKBSD1\0"
ALG = "A256GCM-STREAM"
MAX_HEADER = 4096
KEY_SIZE = 32
_INFO = b"sealroom/kbs-dataset/v1\0"


@dataclass(frozen=True)
class DatasetHeader:
    key_id: str
    version: int
    chunk_size: int
    salt: bytes
    nonce_prefix: bytes
    raw: bytes  # bytes 0 .. 12+n, what every chunk authenticates


@dataclass(frozen=True)
class DatasetSummary:
    key_id: str
    version: int
    plaintext_size: int
    plaintext_sha256: str  # what the manifest's dataset slot pins
    ciphertext_size: int


def _invalid(what: str) -> AttestationError:
    return AttestationError(f"encrypted dataset: {what}", code="kbs-dataset-invalid")


def _content_key(key: bytes, salt: bytes) -> AESGCM:
    if len(key) != KEY_SIZE:
        raise ValueError(f"dataset key must be {KEY_SIZE} bytes, got {len(key)}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=_INFO)
    return AESGCM(hkdf.derive(key))


class _Counting:
    def __init__(self, dst: BinaryIO) -> None:
        self.dst, self.size, self.hash = dst, 0, hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.dst.write(data)
        self.size += len(data)
        self.hash.update(data)


class _Hashing:
    """Reads ``src`` while hashing what was read (the plaintext side of encryption)."""

    def __init__(self, src: BinaryIO) -> None:
        self.src, self.size, self.hash = src, 0, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.size += len(data)
        self.hash.update(data)
        return data


def encrypt_dataset(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    *,
    key_id: str,
    version: int,
    chunk_size: int = CHUNK_SIZE,
) -> DatasetSummary:
    """Encrypt ``src`` to ``dst`` under ``key`` (the KMS key ``key_id`` v``version``),
    streamed (memory: two chunks)."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    salt, nonce_prefix = os.urandom(32), os.urandom(NONCE_PREFIX_SIZE)
    body = canonical_json(
        {
            "alg": ALG,
            "chunk_size": chunk_size,
            "key_id": key_id,
            "version": version,
            "salt": salt.hex(),
            "nonce_prefix": nonce_prefix.hex(),
        }
    )
    raw = MAGIC + struct.pack(">I", len(body)) + body
    out = _Counting(dst)
    out.write(raw)
    reader = _Hashing(src)
    encrypt_chunks(
        reader,
        out,
        _content_key(key, salt),
        nonce_prefix,
        hashlib.sha256(raw).digest(),
        chunk_size,
    )
    return DatasetSummary(key_id, version, reader.size, reader.hash.hexdigest(), out.size)


def read_header(src: BinaryIO) -> DatasetHeader:
    """Parse the header (consumes it from ``src``). MalformedEvidenceError if this is not
    an encrypted sealroom dataset."""
    magic = src.read(len(MAGIC))
    if magic != MAGIC:
        raise MalformedEvidenceError(
            f"encrypted dataset: starts with {magic[:8].hex() or '(nothing)'}, want {MAGIC!r}",
            code="kbs-dataset-format",
        )
    size_bytes = src.read(4)
    if len(size_bytes) != 4:
        raise _invalid("header truncated")
    (n,) = struct.unpack(">I", size_bytes)
    if not 1 <= n <= MAX_HEADER:
        raise _invalid(f"header length {n}, want 1..{MAX_HEADER}")
    body = src.read(n)
    if len(body) != n:
        raise _invalid("header truncated")
    try:
        doc: Any = json.loads(body)
        if doc.get("alg") != ALG:
            raise ValueError(f"alg {doc.get('alg')!r}, want {ALG!r}")
        chunk_size = doc["chunk_size"]
        if not isinstance(chunk_size, int) or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size {chunk_size!r}")
        salt, prefix = bytes.fromhex(doc["salt"]), bytes.fromhex(doc["nonce_prefix"])
        if len(salt) != 32 or len(prefix) != NONCE_PREFIX_SIZE:
            raise ValueError("salt or nonce_prefix has the wrong size")
        key_id, version = doc["key_id"], doc["version"]
        if not isinstance(key_id, str) or not isinstance(version, int):
            raise ValueError("key_id must be a string and version an integer")
        if canonical_json(doc) != body:
            raise ValueError("header is not canonical JSON")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _invalid(f"header: {e}") from e
    return DatasetHeader(key_id, version, chunk_size, salt, prefix, MAGIC + size_bytes + body)


def decrypt_dataset(
    src: BinaryIO, dst: Writer, key: bytes, header: DatasetHeader | None = None
) -> int:
    """Decrypt into ``dst`` (give ``header`` if :func:`read_header` already consumed it);
    returns the plaintext size. AttestationError(code=kbs-dataset-invalid) on a wrong key
    or any alteration; ``dst`` may hold verified chunks then (write to a temporary file)."""
    h = header or read_header(src)
    return decrypt_chunks(
        src,
        dst,
        _content_key(key, h.salt),
        h.nonce_prefix,
        hashlib.sha256(h.raw).digest(),
        h.chunk_size,
        _invalid,
    )
