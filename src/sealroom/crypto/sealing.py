"""Results sealed to one consumer: HPKE (RFC 9180) wraps a random content key, and the
content is a chunked AEAD stream (the STREAM construction of Hoang, Reyhanitabar, Rogaway
and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance").

Sealed format v1 (all integers big-endian; byte layout also in ADR 0009)::

    offset size  field
    0      8     magic          b"SRSEAL1\\0"
    8      2     kem_id         0x0020  DHKEM(X25519, HKDF-SHA256)
    10     2     kdf_id         0x0001  HKDF-SHA256
    12     2     aead_id        0x0003  ChaCha20-Poly1305 (HPKE and the stream)
    14     4     chunk_size     plaintext bytes per chunk (writer: 65536; reader: 1..1 MiB)
    18     7     nonce_prefix   random
    25     32    enc            HPKE encapsulated key (base mode, ``info`` from the caller)
    57     48    wrapped_key    HPKE Seal(content_key[32]), aad = bytes 0..56 || len64(aad) || aad
    105    ...   chunks         ChaCha20-Poly1305(content_key, nonce_i, chunk_i, chunk_aad)

    nonce_i   = nonce_prefix || uint32(i) || last_flag   (last_flag 1 on the final chunk only)
    chunk_aad = SHA-256(bytes 0..104 || uint64(len(aad)) || aad)

Every chunk but the last carries exactly ``chunk_size`` plaintext bytes (``chunk_size`` +
16 on the wire); the last carries 0..chunk_size and is always present (an empty
plaintext is one empty final chunk). The counter catches reordering, duplication and
dropped chunks; the last flag catches truncation at a chunk boundary and appended bytes;
the AAD ties every chunk to this header (and so to this wrapped key). Memory is two
chunks, whatever the size.

Opening writes a chunk to ``dst`` only once it has verified, but the stream as a whole is
authentic only when :func:`open_stream` returns: a truncated or tampered stream raises
after some verified chunks were written. Callers write to a temporary file and delete it
on error, never acting on a partial output.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, PyHPKEError

from sealroom.errors import AttestationError, MalformedEvidenceError, SealroomError

MAGIC = b"SRSEAL1\0"
MAGIC_FAMILY = b"SRSEAL"
KEM_ID = 0x0020
KDF_ID = 0x0001
AEAD_ID = 0x0003
CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 1
MAX_CHUNK_SIZE = 1024 * 1024
TAG_SIZE = 16
KEY_SIZE = 32
ENC_SIZE = 32
NONCE_PREFIX_SIZE = 7
WRAPPED_KEY_SIZE = KEY_SIZE + TAG_SIZE
MAX_CHUNKS = 2**32

_PREFIX = struct.Struct(">8sHHHI7s32s")  # magic .. enc
PREFIX_SIZE = _PREFIX.size  # 57
HEADER_SIZE = PREFIX_SIZE + WRAPPED_KEY_SIZE  # 105

_SUITE = CipherSuite.new(
    KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
)


@dataclass(frozen=True)
class SealedSummary:
    """The sealed bytes written: their size and SHA-256 (hex), as a receipt records them."""

    size: int
    sha256: str


def sealed_size(plaintext_size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Exact size of the sealed form of ``plaintext_size`` bytes."""
    chunks = max(1, -(-plaintext_size // chunk_size))
    return HEADER_SIZE + plaintext_size + chunks * TAG_SIZE


def _bound_aad(header: bytes, aad: bytes) -> bytes:
    return header + struct.pack(">Q", len(aad)) + aad


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def _read_exact(src: Reader, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at end of stream (a short read is retried)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = src.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class _Out:
    """Writes to ``dst`` while counting and hashing what was written."""

    def __init__(self, dst: BinaryIO) -> None:
        self.dst = dst
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        # Like shutil.copyfileobj: a blocking binary stream's write() takes everything.
        self.dst.write(data)
        self.hash.update(data)
        self.size += len(data)


def seal_stream(
    src: BinaryIO,
    dst: BinaryIO,
    recipient: X25519PublicKey,
    *,
    info: bytes,
    aad: bytes = b"",
    chunk_size: int = CHUNK_SIZE,
) -> SealedSummary:
    """Seal everything ``src`` yields to ``recipient``; return the size and SHA-256 of the
    bytes written to ``dst``. ``info`` is the HPKE info string (which computation and
    consumer this is for); ``aad`` is extra context both sides must agree on."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    content_key = ChaCha20Poly1305.generate_key()
    nonce_prefix = os.urandom(NONCE_PREFIX_SIZE)
    try:
        enc, ctx = _SUITE.create_sender_context(
            KEMKey.from_pyca_cryptography_key(recipient), info=info
        )
    except (PyHPKEError, ValueError) as e:
        # Only a low-order recipient key gets here; PartyPublic refuses those earlier.
        raise ValueError(f"cannot seal to this X25519 key: {e}") from e
    prefix = _PREFIX.pack(MAGIC, KEM_ID, KDF_ID, AEAD_ID, chunk_size, nonce_prefix, enc)
    wrapped = ctx.seal(content_key, _bound_aad(prefix, aad))
    header = prefix + wrapped
    chunk_aad = hashlib.sha256(_bound_aad(header, aad)).digest()
    aead = ChaCha20Poly1305(content_key)

    out = _Out(dst)
    out.write(header)
    encrypt_chunks(src, out, aead, nonce_prefix, chunk_aad, chunk_size)
    return SealedSummary(out.size, out.hash.hexdigest())


class ChunkAead(Protocol):
    """An AEAD from pyca/cryptography (ChaCha20Poly1305, AESGCM): 12-byte nonces."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


def encrypt_chunks(
    src: Reader,
    out: Writer,
    aead: ChunkAead,
    nonce_prefix: bytes,
    chunk_aad: bytes,
    chunk_size: int,
) -> None:
    """The STREAM chunks of everything ``src`` yields (see the module doc), to ``out``."""
    cur = _read_exact(src, chunk_size)
    counter = 0
    while True:
        nxt = _read_exact(src, chunk_size) if len(cur) == chunk_size else b""
        last = not nxt
        out.write(aead.encrypt(_nonce(nonce_prefix, counter, last), cur, chunk_aad))
        if last:
            return
        counter += 1
        if counter >= MAX_CHUNKS:
            raise ValueError(f"input too large: more than {MAX_CHUNKS} chunks")
        cur = nxt


def decrypt_chunks(
    src: Reader,
    dst: Writer,
    aead: ChunkAead,
    nonce_prefix: bytes,
    chunk_aad: bytes,
    chunk_size: int,
    invalid: Callable[[str], SealroomError],
) -> int:
    """Inverse of :func:`encrypt_chunks`; returns the plaintext byte count. ``invalid``
    makes the error for an altered, reordered, truncated or extended stream."""
    block = chunk_size + TAG_SIZE
    cur = _read_exact(src, block)
    total = 0
    counter = 0
    while True:
        if len(cur) < TAG_SIZE:
            raise invalid(
                f"truncated: chunk {counter} has {len(cur)} bytes, fewer than its "
                f"{TAG_SIZE}-byte tag"
            )
        nxt = _read_exact(src, block) if len(cur) == block else b""
        last = not nxt
        try:
            plain = aead.decrypt(_nonce(nonce_prefix, counter, last), cur, chunk_aad)
        except InvalidTag as e:
            where = "final chunk" if last else "chunk"
            raise invalid(
                f"{where} {counter} does not authenticate (altered, reordered, duplicated, "
                "or the stream was truncated or extended)"
            ) from e
        dst.write(plain)
        total += len(plain)
        if last:
            return total
        counter += 1
        if counter >= MAX_CHUNKS:
            raise invalid(f"more than {MAX_CHUNKS} chunks")
        cur = nxt


def _invalid(what: str) -> AttestationError:
    return AttestationError(f"sealed data: {what}", code="sealed-data-invalid")


def _open_header(
    src: BinaryIO, recipient: X25519PrivateKey, info: bytes, aad: bytes
) -> tuple[ChaCha20Poly1305, bytes, bytes, int]:
    magic = _read_exact(src, len(MAGIC))
    if magic != MAGIC:
        if magic.startswith(MAGIC_FAMILY) and len(magic) == len(MAGIC):
            raise MalformedEvidenceError(
                f"sealed data: format {magic!r} is not supported (this version reads {MAGIC!r})",
                code="sealed-format-unsupported",
            )
        raise MalformedEvidenceError(
            f"sealed data: starts with {magic[:8].hex() or '(nothing)'}, want the magic "
            f"{MAGIC.hex()} ({MAGIC!r}); not a sealroom sealed file",
            code="sealed-format-unknown",
        )
    rest = _read_exact(src, HEADER_SIZE - len(MAGIC))
    if len(rest) != HEADER_SIZE - len(MAGIC):
        raise _invalid(f"header truncated: {len(MAGIC) + len(rest)} bytes, want {HEADER_SIZE}")
    header = magic + rest
    _, kem_id, kdf_id, aead_id, chunk_size, nonce_prefix, enc = _PREFIX.unpack_from(header)
    if (kem_id, kdf_id, aead_id) != (KEM_ID, KDF_ID, AEAD_ID):
        raise _invalid(
            f"HPKE suite is kem {kem_id:#06x}, kdf {kdf_id:#06x}, aead {aead_id:#06x}; "
            f"format v1 uses {KEM_ID:#06x}, {KDF_ID:#06x}, {AEAD_ID:#06x}"
        )
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise _invalid(f"chunk_size is {chunk_size}, want {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    prefix, wrapped = header[:PREFIX_SIZE], header[PREFIX_SIZE:]
    try:
        ctx = _SUITE.create_recipient_context(
            enc, KEMKey.from_pyca_cryptography_key(recipient), info=info
        )
        content_key = ctx.open(wrapped, _bound_aad(prefix, aad))
    except (PyHPKEError, ValueError) as e:
        raise _invalid(
            "the content key does not open with this recipient key and context (sealed to "
            "another key or another computation/consumer, or the header was altered)"
        ) from e
    if len(content_key) != KEY_SIZE:  # cannot happen for a sealroom writer
        raise _invalid(f"content key is {len(content_key)} bytes, want {KEY_SIZE}")
    chunk_aad = hashlib.sha256(_bound_aad(header, aad)).digest()
    return ChaCha20Poly1305(content_key), nonce_prefix, chunk_aad, chunk_size


def open_stream(
    src: BinaryIO,
    dst: BinaryIO,
    recipient: X25519PrivateKey,
    *,
    info: bytes,
    aad: bytes = b"",
) -> int:
    """Open a sealed stream into ``dst``; return the plaintext byte count.

    Raises AttestationError(code="sealed-data-invalid") on any alteration (header, key,
    chunk bytes, order, duplication, truncation, appended bytes) or when sealed to another
    key or context; MalformedEvidenceError when ``src`` is not a sealroom v1 sealed file.
    ``dst`` may hold verified chunks when it raises: write to a temporary file and
    discard it on error (see the module doc).
    """
    aead, nonce_prefix, chunk_aad, chunk_size = _open_header(src, recipient, info, aad)
    return decrypt_chunks(src, dst, aead, nonce_prefix, chunk_aad, chunk_size, _invalid)


def seal_bytes(data: bytes, recipient: X25519PublicKey, *, info: bytes, aad: bytes = b"") -> bytes:
    """:func:`seal_stream` for data already in memory."""
    out = io.BytesIO()
    seal_stream(io.BytesIO(data), out, recipient, info=info, aad=aad)
    return out.getvalue()


def open_bytes(
    sealed: bytes, recipient: X25519PrivateKey, *, info: bytes, aad: bytes = b""
) -> bytes:
    """:func:`open_stream` for data already in memory; returns only a fully verified
    plaintext."""
    out = io.BytesIO()
    open_stream(io.BytesIO(sealed), out, recipient, info=info, aad=aad)
    return out.getvalue()
