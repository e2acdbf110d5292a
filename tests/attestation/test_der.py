"""The one strict DER reader/writer: minimal encodings only, fuzzed.

Property tests: whatever the reader accepts, the writer re-encodes to the same bytes (so a
second, non-minimal spelling of the same value can never be accepted); arbitrary bytes
raise nothing but MalformedEvidenceError; writer output always reads back.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from sealroom.attestation import der
from sealroom.attestation.snp.certs import OID_BL_SPL, vek_info
from sealroom.attestation.tdx.pck import parse_sgx_extension_der
from sealroom.errors import MalformedEvidenceError
from sealroom.testing.fake_intel import sgx_extension_der

FUZZ = settings(max_examples=400, deadline=None)

tags = st.integers(0, 0xFF).filter(lambda t: t & 0x1F != 0x1F)
tlvs = st.lists(st.tuples(tags, st.binary(max_size=300)), max_size=5)


@FUZZ
@given(tlvs)
def test_encode_then_read_round_trips(items: list[tuple[int, bytes]]) -> None:
    data = b"".join(der.encode_tlv(t, v) for t, v in items)
    assert [tuple(x) for x in der.read_tlvs(data, "fuzz")] == items


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_malformed_and_accepted_is_canonical(data: bytes) -> None:
    try:
        parsed = der.read_tlvs(data, "fuzz")
    except MalformedEvidenceError:
        return
    assert b"".join(der.encode_tlv(t, v) for t, v in parsed) == data


@FUZZ
@given(st.binary(max_size=40))
def test_arbitrary_integer_and_oid_contents(value: bytes) -> None:
    try:
        n = der.read_int(der.Tlv(der.INTEGER, value), "fuzz")
    except MalformedEvidenceError:
        pass
    else:
        assert der.encode_int(n) == der.encode_tlv(der.INTEGER, value)
    try:
        dotted = der.read_oid(der.Tlv(der.OID, value), "fuzz")
    except MalformedEvidenceError:
        pass
    else:
        assert der.encode_oid(dotted) == der.encode_tlv(der.OID, value)


@FUZZ
@given(st.integers(-(2**80), 2**80))
def test_integer_round_trip(n: int) -> None:
    assert der.read_int(der.read_one(der.encode_int(n), "int"), "int") == n


@FUZZ
@given(st.integers(0, 2), st.integers(0, 39), st.lists(st.integers(0, 2**64), max_size=8))
def test_oid_round_trip(a: int, b: int, rest: list[int]) -> None:
    dotted = ".".join(map(str, [a, b, *rest]))
    assert der.read_oid(der.read_one(der.encode_oid(dotted), "oid"), "oid") == dotted


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (bytes.fromhex("020105"), None),  # the minimal form, accepted
        (bytes.fromhex("02810105"), "non-minimal DER length"),  # long form for length 1
        (bytes.fromhex("0282000105"), "leading zero octet"),
        (bytes.fromhex("0280050000"), "indefinite"),
        (bytes.fromhex("02010500"), "trailing bytes"),
        (bytes.fromhex("0201"), "exceeds"),
        (bytes.fromhex("1f0100"), "multi-byte DER tag"),
        (bytes.fromhex("0285ffffffffff"), "at most 4"),
    ],
)
def test_non_minimal_or_indefinite_length_and_trailing_bytes_rejected(
    data: bytes, needle: str | None
) -> None:
    if needle is None:
        assert der.read_one(data, "x") == (der.INTEGER, b"\x05")
        return
    with pytest.raises(MalformedEvidenceError) as e:
        der.read_one(data, "x")
    assert needle in e.value.message


@pytest.mark.parametrize("content", ["0005", "ff80", ""])
def test_non_minimal_integer_rejected(content: str) -> None:
    with pytest.raises(MalformedEvidenceError):
        der.read_int(der.Tlv(der.INTEGER, bytes.fromhex(content)), "x")


@pytest.mark.parametrize("content", ["2a8001", "2a86", ""])
def test_non_minimal_or_truncated_oid_rejected(content: str) -> None:
    with pytest.raises(MalformedEvidenceError):
        der.read_oid(der.Tlv(der.OID, bytes.fromhex(content)), "x")


def test_pck_extension_with_non_minimal_length_rejected() -> None:
    """The TDX PCK reader uses the strict module: one length re-spelt in the long form."""
    good = sgx_extension_der(
        ppid=bytes(16),
        components=tuple(range(16)),
        pce_svn=11,
        cpu_svn=bytes(16),
        pce_id=bytes(2),
        fmspc=bytes(6),
    )
    parse_sgx_extension_der(good)
    # The PPID OCTET STRING header 04 10 -> 04 81 10 (same value, non-minimal length);
    # its enclosing SEQUENCE lengths grow by one to stay consistent.
    ppid_at = good.index(bytes.fromhex("0410") + bytes(16))
    bad = bytearray(good[:ppid_at] + bytes.fromhex("048110") + good[ppid_at + 2 :])
    assert good[:2] == bytes.fromhex("3082") and good[4] == der.SEQUENCE
    bad[3] += 1  # outer SEQUENCE (30 82 hi lo): low length octet
    bad[5] += 1  # first (OID, PPID) pair SEQUENCE (30 len)
    with pytest.raises(MalformedEvidenceError) as e:
        parse_sgx_extension_der(bytes(bad))
    assert e.value.code == "tdx-pck-extension"
    assert "non-minimal" in e.value.message


def test_vcek_extension_with_non_minimal_integer_rejected() -> None:
    """The SNP VCEK extension reader uses the strict module: blSPL 3 spelt 02 02 00 03."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SEV-VCEK")])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now)
        .add_extension(
            x509.UnrecognizedExtension(OID_BL_SPL, bytes.fromhex("02020003")), critical=False
        )
        .sign(key, hashes.SHA384())
    )
    with pytest.raises(MalformedEvidenceError) as e:
        vek_info(cert)
    assert "non-minimal DER INTEGER" in e.value.message


@FUZZ
@given(
    tags,
    st.binary(max_size=200),
    st.sampled_from(["minimal", "long", "padded", "indefinite", "trailing", "truncated"]),
)
def test_agrees_with_pyca_rust_asn1_on_single_tlvs(tag: int, value: bytes, how: str) -> None:
    """Differential: pyca/cryptography's (rust-asn1, strict DER) TLV reader accepts exactly
    what ours accepts, with the same tag and value (lengths mis-spelt on purpose)."""
    from cryptography.hazmat import asn1

    n = len(value)
    length = {
        "minimal": der.encode_length(n),
        "long": bytes([0x81, n]) if n < 256 else der.encode_length(n),
        "padded": bytes([0x82]) + n.to_bytes(2, "big"),
        "indefinite": b"\x80",
        "trailing": der.encode_length(n),
        "truncated": der.encode_length(n + 1),
    }[how]
    data = bytes([tag]) + length + value + (b"\x00" if how == "trailing" else b"")
    try:
        theirs = asn1.decode_der(asn1.TLV, data)
    except ValueError:
        theirs = None
    try:
        ours = der.read_one(data, "diff")
    except MalformedEvidenceError:
        ours = None
    if theirs is None or ours is None:
        assert theirs is None and ours is None, (data.hex(), theirs, ours)
    else:
        assert (theirs.tag_bytes, bytes(theirs.data)) == (bytes([ours.tag]), ours.value)
