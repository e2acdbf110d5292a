"""Sealed results: round trips, every kind of alteration, wrong recipient/context, flat
memory, RFC 9180 known answers for the HPKE suite, and fuzzing of the reader."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

from sealroom.crypto import sealing
from sealroom.crypto.sealing import (
    HEADER_SIZE,
    MAGIC,
    PREFIX_SIZE,
    TAG_SIZE,
    SealedSummary,
    open_bytes,
    open_stream,
    seal_bytes,
    seal_stream,
    sealed_size,
)
from sealroom.errors import AttestationError, MalformedEvidenceError

INFO = b"sealroom/result/v1" + bytes(32) + b"alice"
AAD = b"receipt-context"
KEY = X25519PrivateKey.generate()
SMALL = 16  # chunk size for structural tests: 70 bytes -> 5 chunks (4 full + 6 bytes)
PLAIN = bytes(range(70))


def _seal(data: bytes = PLAIN, chunk_size: int = SMALL) -> bytes:
    out = io.BytesIO()
    seal_stream(io.BytesIO(data), out, KEY.public_key(), info=INFO, aad=AAD, chunk_size=chunk_size)
    return out.getvalue()


def _open(
    sealed: bytes, key: X25519PrivateKey = KEY, info: bytes = INFO, aad: bytes = AAD
) -> bytes:
    return open_bytes(sealed, key, info=info, aad=aad)


def _chunks(sealed: bytes, chunk_size: int = SMALL) -> list[bytes]:
    body = sealed[HEADER_SIZE:]
    n = chunk_size + TAG_SIZE
    return [body[i : i + n] for i in range(0, len(body), n)]


def _join(sealed: bytes, chunks: list[bytes]) -> bytes:
    return sealed[:HEADER_SIZE] + b"".join(chunks)


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 64, 70, 1000])
def test_round_trip_small_chunks(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    sealed = _seal(data)
    assert len(sealed) == sealed_size(size, SMALL)
    assert _open(sealed) == data


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 3 * 65536, 200_000])
def test_round_trip_default_chunk_size(size: int) -> None:
    data = bytes(i % 253 for i in range(size))
    sealed = seal_bytes(data, KEY.public_key(), info=INFO)
    assert sealed.startswith(MAGIC)
    assert len(sealed) == sealed_size(size)
    assert open_bytes(sealed, KEY, info=INFO) == data


def test_summary_describes_the_bytes_written() -> None:
    out = io.BytesIO()
    summary = seal_stream(io.BytesIO(b"hello"), out, KEY.public_key(), info=INFO)
    assert summary == SealedSummary(len(out.getvalue()), hashlib.sha256(out.getvalue()).hexdigest())


def test_two_seals_of_the_same_data_differ() -> None:
    # Fresh content key, nonce prefix and HPKE ephemeral key each time.
    assert _seal() != _seal()


def test_open_reads_from_short_reads() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
            n = min(3, len(b), len(self.data))
            b[:n] = self.data[:n]
            self.data = self.data[n:]
            return n

    sealed = _seal()
    out = io.BytesIO()
    assert open_stream(Trickle(sealed), out, KEY, info=INFO, aad=AAD) == len(PLAIN)  # type: ignore[arg-type]
    assert out.getvalue() == PLAIN


# --- alterations: every one is an AttestationError -------------------------------------


def _drop_last(s: bytes) -> bytes:
    return _join(s, _chunks(s)[:-1])


def _drop_middle(s: bytes) -> bytes:
    c = _chunks(s)
    return _join(s, c[:2] + c[3:])


def _swap_chunks(s: bytes) -> bytes:
    c = _chunks(s)
    c[1], c[2] = c[2], c[1]
    return _join(s, c)


def _duplicate_chunk(s: bytes) -> bytes:
    c = _chunks(s)
    return _join(s, [*c[:2], c[1], *c[2:]])


def _duplicate_last_chunk(s: bytes) -> bytes:
    c = _chunks(s)
    return _join(s, [*c, c[-1]])


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def f(s: bytes) -> bytes:
        b = bytearray(s)
        b[offset if offset >= 0 else len(b) + offset] ^= 0x01
        return bytes(b)

    return f


ALTERATIONS: dict[str, Callable[[bytes], bytes]] = {
    "suite_id_changed": _flip(9),
    "chunk_size_changed": _flip(17),
    "nonce_prefix_changed": _flip(20),
    "enc_changed": _flip(30),
    "wrapped_key_changed": _flip(PREFIX_SIZE + 5),
    "wrapped_key_tag_changed": _flip(HEADER_SIZE - 1),
    "chunk_byte_flipped": _flip(HEADER_SIZE + 3),
    "chunk_tag_flipped": _flip(HEADER_SIZE + SMALL + 2),
    "last_chunk_byte_flipped": _flip(-1),
    "last_chunk_dropped": _drop_last,
    "middle_chunk_dropped": _drop_middle,
    "chunks_swapped": _swap_chunks,
    "chunk_duplicated": _duplicate_chunk,
    "last_chunk_duplicated": _duplicate_last_chunk,
    "one_byte_appended": lambda s: s + b"\0",
    "chunk_appended": lambda s: s + _chunks(s)[0],
    "truncated_mid_chunk": lambda s: s[:-3],
    "truncated_to_header": lambda s: s[:HEADER_SIZE],
    "truncated_mid_header": lambda s: s[: HEADER_SIZE - 10],
    "empty_final_chunk_appended_by_reseal": lambda s: s + _seal(b"")[HEADER_SIZE:],
    "chunk_from_another_stream": lambda s: _join(s, [_chunks(_seal())[0], *_chunks(s)[1:]]),
    "header_from_another_stream": lambda s: _seal()[:HEADER_SIZE] + s[HEADER_SIZE:],
}


@pytest.mark.parametrize("name", sorted(ALTERATIONS))
def test_altered_stream_is_rejected(name: str) -> None:
    sealed = _seal()
    altered = ALTERATIONS[name](sealed)
    assert altered != sealed
    with pytest.raises(AttestationError) as ei:
        _open(altered)
    assert ei.value.code == "sealed-data-invalid"


def test_every_header_byte_after_the_magic_is_authenticated() -> None:
    sealed = _seal()
    for i in range(len(MAGIC), HEADER_SIZE):
        with pytest.raises(AttestationError):
            _open(_flip(i)(sealed))


def test_every_body_byte_is_authenticated() -> None:
    sealed = _seal()
    for i in range(HEADER_SIZE, len(sealed)):
        with pytest.raises(AttestationError):
            _open(_flip(i)(sealed))


def test_every_truncation_is_detected() -> None:
    sealed = _seal()
    for n in range(len(MAGIC), len(sealed)):
        with pytest.raises(AttestationError):
            _open(sealed[:n])


@pytest.mark.parametrize("size", [0, 16, 32])
def test_truncation_at_a_chunk_boundary_is_detected(size: int) -> None:
    # Plaintext a multiple of the chunk size: the last full chunk carries the last flag,
    # so cutting a whole chunk (or the empty final chunk) is still caught.
    sealed = _seal(bytes(size))
    for n in range(HEADER_SIZE, len(sealed), SMALL + TAG_SIZE):
        with pytest.raises(AttestationError):
            _open(sealed[:n])


def test_magic_altered_is_not_a_sealed_file() -> None:
    with pytest.raises(MalformedEvidenceError) as ei:
        _open(_flip(0)(_seal()))
    assert ei.value.code == "sealed-format-unknown"


def test_future_format_version_is_named() -> None:
    with pytest.raises(MalformedEvidenceError) as ei:
        _open(b"SRSEAL2\0" + _seal()[8:])
    assert ei.value.code == "sealed-format-unsupported"


def test_empty_input_is_not_a_sealed_file() -> None:
    with pytest.raises(MalformedEvidenceError):
        _open(b"")


# --- wrong key or context --------------------------------------------------------------


def test_wrong_recipient_key() -> None:
    with pytest.raises(AttestationError, match="does not open"):
        _open(_seal(), key=X25519PrivateKey.generate())


def test_sealed_for_another_consumer_info() -> None:
    with pytest.raises(AttestationError):
        _open(_seal(), info=b"sealroom/result/v1" + bytes(32) + b"bob")


def test_sealed_with_other_aad() -> None:
    with pytest.raises(AttestationError):
        _open(_seal(), aad=b"other")


def test_only_verified_chunks_reach_the_output() -> None:
    sealed = _flip(-1)(_seal())  # the final chunk is bad
    out = io.BytesIO()
    with pytest.raises(AttestationError):
        open_stream(io.BytesIO(sealed), out, KEY, info=INFO, aad=AAD)
    assert out.getvalue() == PLAIN[:64]  # the four full chunks that verified, nothing else


def test_bad_chunk_size_is_refused_when_sealing() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        seal_stream(io.BytesIO(b""), io.BytesIO(), KEY.public_key(), info=INFO, chunk_size=0)


# --- memory stays flat -----------------------------------------------------------------


class _Pattern(io.RawIOBase):
    """``size`` deterministic bytes, generated as read, hashed on the way out."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = hashlib.sha256(b"pattern").digest() * 2048  # 64 KiB
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.left, len(self.block))
        b[:n] = self.block[:n]
        self.hash.update(self.block[:n])
        self.left -= n
        return n


class _HashSink(io.RawIOBase):
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.hash.update(b)
        self.size += len(b)
        return len(b)


def test_twenty_megabytes_with_flat_memory(tmp_path: Path) -> None:
    size = 20 * 1024 * 1024
    sealed_path = tmp_path / "sealed"
    src = _Pattern(size)
    sink = _HashSink()
    tracemalloc.start()
    try:
        with sealed_path.open("wb") as f:
            summary = seal_stream(src, f, KEY.public_key(), info=INFO)  # type: ignore[arg-type]
        with sealed_path.open("rb") as f:
            n = open_stream(f, sink, KEY, info=INFO)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == size == sink.size
    assert sink.hash.digest() == src.hash.digest()
    assert summary.size == sealed_path.stat().st_size == sealed_size(size)
    assert summary.sha256 == hashlib.sha256(sealed_path.read_bytes()).hexdigest()
    assert peak < 4 * 1024 * 1024, f"peak traced memory {peak} bytes for a {size}-byte stream"


# --- the HPKE suite against RFC 9180 Appendix A.2.1 -------------------------------------
# DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base mode, sequence 0.

A21_INFO = "4f6465206f6e2061204772656369616e2055726e"
A21_IKM_E = "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b"
A21_SK_RM = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb"
A21_PK_RM = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a"
A21_ENC = "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a"
A21_PT = "4265617574792069732074727574682c20747275746820626561757479"
A21_AAD0 = "436f756e742d30"
A21_CT0 = (
    "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28"
)


def test_hpke_suite_matches_rfc9180_a21() -> None:
    suite = CipherSuite.new(
        KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
    )
    assert (suite.kem.id.value, suite.kdf.id.value, suite.aead.id.value) == (
        sealing.KEM_ID,
        sealing.KDF_ID,
        sealing.AEAD_ID,
    )
    sk_r = X25519PrivateKey.from_private_bytes(bytes.fromhex(A21_SK_RM))
    assert sk_r.public_key().public_bytes_raw().hex() == A21_PK_RM
    # Sender, with the RFC's ephemeral key derived from ikmE.
    eks = suite.kem.derive_key_pair(bytes.fromhex(A21_IKM_E))
    enc, sender = suite.create_sender_context(
        KEMKey.from_pyca_cryptography_key(sk_r.public_key()),
        info=bytes.fromhex(A21_INFO),
        eks=eks,
    )
    assert enc.hex() == A21_ENC
    assert sender.seal(bytes.fromhex(A21_PT), bytes.fromhex(A21_AAD0)).hex() == A21_CT0
    # Recipient.
    recipient = suite.create_recipient_context(
        bytes.fromhex(A21_ENC), KEMKey.from_pyca_cryptography_key(sk_r), bytes.fromhex(A21_INFO)
    )
    assert recipient.open(bytes.fromhex(A21_CT0), bytes.fromhex(A21_AAD0)).hex() == A21_PT


# --- fuzzing the reader: only AttestationError / MalformedEvidenceError escape ----------

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = _seal()


def _open_only_typed_errors(data: bytes) -> None:
    try:
        _open(data)
    except (AttestationError, MalformedEvidenceError):
        pass


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    _open_only_typed_errors(data)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_after_the_magic(data: bytes) -> None:
    _open_only_typed_errors(MAGIC + data)


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=4
    ),
    st.integers(0, len(VALID)),
)
def test_fuzz_mutated_valid_stream(flips: list[tuple[int, int]], cut: int) -> None:
    b = bytearray(VALID)
    for pos, x in flips:
        b[pos] ^= x
    mutated = bytes(b[:cut]) if cut < len(b) else bytes(b)
    try:
        assert _open(mutated) == PLAIN
        assert mutated == VALID  # only the untouched stream opens
    except (AttestationError, MalformedEvidenceError):
        pass
