"""Quote parser on the real vectors: layout, round trip, trailing bytes, strictness."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sealroom.attestation.tdx.abi import (
    HEADER_SIZE,
    SGX_REPORT_SIZE,
    TD10_BODY_SIZE,
    BodyType,
    EnclaveReport,
    Quote,
    TdReportBody,
    TeeType,
)
from sealroom.errors import MalformedEvidenceError

# path under vectors/, version, body type, trailing bytes
QUOTES = [
    ("intel/tdx_v4_phala/quote.bin", 4, BodyType.TD10, 70),
    ("intel/tdx_v5_phala_tcb_unmatched/quote.bin", 5, BodyType.TD15, 0),
    ("intel/sgx_v3_phala/quote.bin", 3, BodyType.SGX, 0),
    ("intel/tdx_v4_gotdx_spr/quote_with_trailing_text.bin", 4, BodyType.TD10, 39),
    ("intel/tdx_v5_gotdx/quote.bin", 5, BodyType.TD15, 0),
    ("intel/trustee/tdx_v4_debug_td_quote.bin", 4, BodyType.TD10, 0),
    ("intel/trustee/tdx_v5_quote.bin", 5, BodyType.TD15, 0),
    ("intel/trustee/tdx_v4_quote_fmspc00a06d080000.bin", 4, BodyType.TD10, 70),
    ("intel/trustee/sgx_v3_debug_enclave_quote.bin", 3, BodyType.SGX, 0),
    ("vtpm/azure_tdx/td_quote.bin", 4, BodyType.TD10, 70),
]


def _read(intel: Path, rel: str) -> bytes:
    return (intel.parent / rel).read_bytes()


@pytest.mark.parametrize(("rel", "version", "body_type", "trailing"), QUOTES)
def test_vector_parses_and_round_trips(
    intel: Path, rel: str, version: int, body_type: BodyType, trailing: int
) -> None:
    raw = _read(intel, rel)
    q = Quote.from_bytes(raw)
    assert q.version == version
    assert q.body_type is body_type
    assert q.tee_type is (TeeType.SGX if version == 3 else TeeType.TDX)
    assert len(q.trailing) == trailing
    assert q.to_bytes() == raw
    assert q.signed_region() == q.signed_bytes
    qe = q.signature_data.qe
    assert len(qe.qe_auth_data) == 32
    assert qe.pck_cert_data.cert_type == 5
    assert b"-----BEGIN CERTIFICATE-----" in qe.pck_cert_data.data


def test_trailing_bytes_are_kept_verbatim(intel: Path) -> None:
    q = Quote.from_bytes(_read(intel, "intel/tdx_v4_gotdx_spr/quote_with_trailing_text.bin"))
    assert q.trailing == b"\nextra bytes(only for testing purpose)\n"
    q = Quote.from_bytes(_read(intel, "intel/tdx_v4_phala/quote.bin"))
    assert q.trailing == bytes(70)


@pytest.mark.parametrize(("rel", "version", "body_type", "trailing"), QUOTES)
def test_fields_agree_with_dcap_qvl_parser(
    intel: Path, rel: str, version: int, body_type: BodyType, trailing: int
) -> None:
    dcap_qvl = pytest.importorskip("dcap_qvl")
    raw = _read(intel, rel)
    ours = Quote.from_bytes(raw)
    peer = dcap_qvl.parse_quote(raw)
    assert peer.header.version == ours.version
    assert peer.header.qe_svn == ours.header.qe_svn
    assert peer.header.pce_svn == ours.header.pce_svn
    assert peer.header.user_data == ours.header.user_data
    rep = peer.report
    if isinstance(ours.body, TdReportBody):
        b = ours.body
        pairs = {
            "tee_tcb_svn": b.tee_tcb_svn,
            "mr_seam": b.mr_seam,
            "mr_signer_seam": b.mr_signer_seam,
            "seam_attributes": b.seam_attributes,
            "td_attributes": b.td_attributes,
            "xfam": b.xfam,
            "mr_td": b.mr_td,
            "mr_config_id": b.mr_config_id,
            "mr_owner": b.mr_owner,
            "mr_owner_config": b.mr_owner_config,
            "rt_mr0": b.rtmr0,
            "rt_mr1": b.rtmr1,
            "rt_mr2": b.rtmr2,
            "rt_mr3": b.rtmr3,
            "report_data": b.report_data,
        }
        if b.is_td15:
            pairs["tee_tcb_svn2"] = b.tee_tcb_svn2 or b""
            pairs["mr_service_td"] = b.mr_servicetd or b""
    else:
        s = ours.sgx_body
        pairs = {
            "cpu_svn": s.cpu_svn,
            "attributes": s.attributes,
            "mr_enclave": s.mr_enclave,
            "mr_signer": s.mr_signer,
            "report_data": s.report_data,
        }
    for name, value in pairs.items():
        assert bytes(getattr(rep, name)) == value, name


def test_debug_bits_decoded(intel: Path) -> None:
    td = Quote.from_bytes(_read(intel, "intel/trustee/tdx_v4_debug_td_quote.bin")).td_body
    assert td.attributes.debug
    assert td.attributes.sept_ve_disable
    ok = Quote.from_bytes(_read(intel, "intel/tdx_v4_phala/quote.bin")).td_body
    assert not ok.attributes.debug
    sgx = Quote.from_bytes(_read(intel, "intel/trustee/sgx_v3_debug_enclave_quote.bin"))
    assert sgx.sgx_body.debug
    assert not Quote.from_bytes(_read(intel, "intel/sgx_v3_phala/quote.bin")).sgx_body.debug


def test_sgx_report_data_is_hello_world(intel: Path) -> None:
    q = Quote.from_bytes(_read(intel, "intel/sgx_v3_phala/quote.bin"))
    assert q.sgx_body.report_data == b"Hello, world!" + bytes(51)


# --- strictness: each malformation named after the defect --------------------------------


def _sig_len_offset(raw: bytes) -> int:
    q = Quote.from_bytes(raw)
    return len(q.signed_bytes)


def _patch(raw: bytes, off: int, new: bytes) -> bytes:
    return raw[:off] + new + raw[off + len(new) :]


def _cases(raw_v4: bytes, raw_v5: bytes) -> dict[str, bytes]:
    sl = _sig_len_offset(raw_v4)
    (sig_len,) = struct.unpack_from("<I", raw_v4, sl)
    qe_off = sl + 4 + 64 + 64 + 6  # QE report inside the type-6 certification data
    return {
        "empty": b"",
        "header_only": raw_v4[:HEADER_SIZE],
        "truncated_body": raw_v4[: HEADER_SIZE + TD10_BODY_SIZE - 1],
        "truncated_signature_data": raw_v4[: sl + 4 + sig_len - 1],
        "version_2": _patch(raw_v4, 0, struct.pack("<H", 2)),
        "version_6": _patch(raw_v4, 0, struct.pack("<H", 6)),
        "p384_key_type": _patch(raw_v4, 2, struct.pack("<H", 3)),
        "unknown_tee_type": _patch(raw_v4, 4, struct.pack("<I", 0x80)),
        "v4_with_sgx_tee_type": _patch(raw_v4, 4, struct.pack("<I", 0)),
        "signature_length_past_end": _patch(raw_v4, sl, struct.pack("<I", sig_len + 10_000)),
        "signature_length_short": _patch(raw_v4, sl, struct.pack("<I", sig_len - 1)),
        "outer_cert_type_5": _patch(raw_v4, sl + 4 + 128, struct.pack("<H", 5)),
        "outer_cert_size_wrong": _patch(raw_v4, sl + 4 + 130, struct.pack("<I", 1)),
        "qe_report_reserved_nonzero": _patch(raw_v4, qe_off + 0x14, b"\x01"),
        "v5_body_type_4": _patch(raw_v5, HEADER_SIZE, struct.pack("<H", 4)),
        "v5_body_size_wrong": _patch(raw_v5, HEADER_SIZE + 2, struct.pack("<I", 584)),
    }


CASE_NAMES = [
    "empty",
    "header_only",
    "truncated_body",
    "truncated_signature_data",
    "version_2",
    "version_6",
    "p384_key_type",
    "unknown_tee_type",
    "v4_with_sgx_tee_type",
    "signature_length_past_end",
    "signature_length_short",
    "outer_cert_type_5",
    "outer_cert_size_wrong",
    "qe_report_reserved_nonzero",
    "v5_body_type_4",
    "v5_body_size_wrong",
]


@pytest.mark.parametrize("defect", CASE_NAMES)
def test_malformed_quote_rejected(intel: Path, defect: str) -> None:
    v4 = _read(intel, "intel/tdx_v4_phala/quote.bin")[:-70]
    v5 = _read(intel, "intel/tdx_v5_phala_tcb_unmatched/quote.bin")
    data = _cases(v4, v5)[defect]
    with pytest.raises(MalformedEvidenceError):
        Quote.from_bytes(data)


def test_sgx_body_reserved_nonzero_rejected(intel: Path) -> None:
    raw = _read(intel, "intel/sgx_v3_phala/quote.bin")
    bad = _patch(raw, HEADER_SIZE + 0x60, b"\x01")  # reserved after MRENCLAVE
    with pytest.raises(MalformedEvidenceError, match="reserved 0x060"):
        Quote.from_bytes(bad)


def test_builders_are_inverse_of_parsers(intel: Path) -> None:
    q = Quote.from_bytes(_read(intel, "intel/sgx_v3_phala/quote.bin"))
    assert EnclaveReport.from_bytes(q.sgx_body.to_bytes()) == q.sgx_body
    assert len(q.sgx_body.to_bytes()) == SGX_REPORT_SIZE
    t = Quote.from_bytes(_read(intel, "intel/tdx_v5_gotdx/quote.bin")).td_body
    assert TdReportBody.from_bytes(t.to_bytes()) == t
