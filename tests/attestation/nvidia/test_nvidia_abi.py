"""SPDM GET_MEASUREMENTS parsing on the real vectors, plus strictness and fuzzing."""

from __future__ import annotations

import base64
import contextlib
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealroom.attestation.nvidia import abi, formats
from sealroom.attestation.nvidia.abi import OpaqueField, OpaqueFieldId, parse_evidence
from sealroom.errors import MalformedEvidenceError

from ._support import read_vector

pytestmark = pytest.mark.vectors


def _hex(rel: str) -> bytes:
    return bytes.fromhex(read_vector(rel).decode().strip())


def _ppcie(rel: str) -> list[bytes]:
    return [base64.b64decode(e["evidence"]) for e in json.loads(read_vector(rel))]


def test_h100_nvtrust_parses_by_structure() -> None:
    raw = _hex("h100_nvtrust/attestation_report.hex")
    ev = parse_evidence(raw)
    assert len(raw) == 4117
    assert ev.request.signature_requested
    assert ev.request.param2 == 0xFF
    assert ev.nonce is not None
    assert ev.nonce.hex().startswith("931d8dd0")
    assert len(ev.response.blocks) == 64
    assert [b.index for b in ev.response.blocks] == list(range(1, 65))
    assert all(len(b.value) == 48 and not b.raw_bit_stream for b in ev.response.blocks)
    assert len(ev.signature) == 96
    assert ev.trailing == b""
    assert ev.signed_bytes == raw[:-96]
    opaque = abi.decode_opaque(ev.response.opaque)
    assert opaque["driver_version"] == "550.90.07"
    assert opaque["vbios_version"] == "96.00.9F.00.01"
    assert (opaque["project"], opaque["chip_sku"]) == ("1010", "882")
    assert opaque["nvdec0_status"] == "disabled"


def test_trustee_coco_trailing_byte_is_kept_out_of_the_signature() -> None:
    raw = _hex("h100_trustee_coco/attestation_report_trailing_byte.hex")
    ev = parse_evidence(raw)
    assert ev.trailing == b"\x00"
    assert ev.signature == raw[-97:-1]
    assert ev.signed_bytes == raw[:-97]
    opaque = abi.decode_opaque(ev.response.opaque)
    assert opaque["driver_version"] == "580.95.05"
    assert opaque["opaque_data_version"] == "1"


@pytest.mark.parametrize(
    "rel",
    [
        "h100_nvtrust/attestation_report.hex",
        "h100_trustee_coco/attestation_report_trailing_byte.hex",
    ],
)
def test_to_bytes_is_the_inverse_of_parse(rel: str) -> None:
    raw = _hex(rel)
    assert parse_evidence(raw).to_bytes() == raw


def test_ppcie_gpu_and_switch_evidence_parse() -> None:
    gpus = _ppcie("hgx_ppcie/gpu_evidence_8xH100.json")
    switches = _ppcie("hgx_ppcie/switch_evidence_4xLS10.json")
    assert len(gpus) == 8
    assert len(switches) == 4
    for raw in gpus:
        ev = parse_evidence(raw)
        assert ev.to_bytes() == raw
        opaque = abi.decode_opaque(ev.response.opaque)
        assert opaque["feature_flag"] == "PPCIE"
        assert opaque["protected_pcie_status"] == "enabled"
        assert opaque["vbios_version"] == "96.00.A5.00.01"
    for raw in switches:
        ev = parse_evidence(raw)
        assert ev.to_bytes() == raw
        assert len(ev.response.blocks) == 31
        # Switches send the VBIOS version as text, GPUs as 8 binary bytes.
        assert abi.decode_opaque(ev.response.opaque)["vbios_version"] == "96.10.73.00.01"


def test_vbios_version_binary_layout() -> None:
    assert abi.format_vbios_version(bytes.fromhex("009f009601000000")) == "96.00.9F.00.01"
    assert abi.format_vbios_version(b"96.10.73.00.01") == "96.10.73.00.01"
    with pytest.raises(MalformedEvidenceError):
        abi.format_vbios_version(b"not-a-version")


def _base() -> bytes:
    return _hex("h100_nvtrust/attestation_report.hex")


def _patch(raw: bytes, offset: int, new: bytes) -> bytes:
    return raw[:offset] + new + raw[offset + len(new) :]


RESP = 37  # the response starts after the 37-byte request


@pytest.mark.parametrize(
    ("defect", "mutate", "message"),
    [
        ("spdm_version_1_2", lambda r: _patch(r, 0, b"\x12"), "only 0x11"),
        ("request_code_not_get_measurements", lambda r: _patch(r, 1, b"\xe1"), "0xe0"),
        ("request_truncated", lambda r: r[:20], "need 37"),
        ("response_version_differs", lambda r: _patch(r, RESP, b"\x10"), "request was 0x11"),
        ("response_code_not_measurements", lambda r: _patch(r, RESP + 1, b"\x61"), "0x60"),
        ("number_of_blocks_wrong", lambda r: _patch(r, RESP + 4, b"\x3f"), "NumberOfBlocks"),
        ("record_length_past_end", lambda r: _patch(r, RESP + 5, b"\xff\xff\x7f"), "exceeds"),
        ("block_index_reserved", lambda r: _patch(r, RESP + 8, b"\x00"), "reserved"),
        ("block_index_duplicated", lambda r: _patch(r, RESP + 8 + 55, b"\x01"), "twice"),
        ("block_spec_not_dmtf", lambda r: _patch(r, RESP + 9, b"\x02"), "DMTF"),
        ("dmtf_size_mismatch", lambda r: _patch(r, RESP + 13, b"\x2f\x00"), "ValueSize"),
        ("signature_truncated", lambda r: r[:-10], "signature truncated"),
        ("empty", lambda r: b"", "at least 4"),
    ],
)
def test_malformed_evidence_is_rejected(defect: str, mutate: object, message: str) -> None:
    assert callable(mutate)
    with pytest.raises(MalformedEvidenceError, match=message):
        parse_evidence(mutate(_base()))


def _opaque_offset(raw: bytes) -> int:
    record_len = int.from_bytes(raw[RESP + 5 : RESP + 8], "little")
    return RESP + 8 + record_len + 32  # at OpaqueLength


def test_opaque_length_over_spdm_limit_is_rejected() -> None:
    raw = _base()
    off = _opaque_offset(raw)
    with pytest.raises(MalformedEvidenceError, match="at most 1024"):
        parse_evidence(_patch(raw, off, struct.pack("<H", 1025)))


def test_opaque_tlv_overrunning_its_length_is_rejected() -> None:
    raw = _base()
    off = _opaque_offset(raw) + 2  # first TLV: VBIOS_VERSION (6), length 8
    with pytest.raises(MalformedEvidenceError, match="exceeds"):
        parse_evidence(_patch(raw, off + 2, struct.pack("<H", 0x7FFF)))


def test_opaque_field_appearing_twice_is_rejected() -> None:
    with pytest.raises(MalformedEvidenceError, match="twice"):
        abi.parse_opaque_data(OpaqueField(3, b"1\x00").to_bytes() * 2)


def test_opaque_driver_version_not_ascii_is_rejected() -> None:
    with pytest.raises(MalformedEvidenceError, match="printable"):
        abi.decode_opaque_field(OpaqueField(OpaqueFieldId.DRIVER_VERSION, b"\x01\x02"))


def test_unknown_opaque_field_is_kept_as_hex() -> None:
    assert abi.decode_opaque((OpaqueField(200, b"\xab"),)) == {"field_200": "ab"}


def test_unsigned_request_parses_without_signature() -> None:
    raw = _base()
    ev = parse_evidence(raw)
    req = abi.MeasurementRequest(0x11, 0x00, 0xFF, None, None)
    unsigned = abi.SpdmEvidence.build(req, ev.response)
    back = parse_evidence(unsigned.to_bytes())
    assert back.signature == b""
    assert not back.request.signature_requested
    assert back.response == ev.response


# --- fuzzing: only MalformedEvidenceError escapes ----------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_parse_random_bytes(data: bytes) -> None:
    with contextlib.suppress(MalformedEvidenceError):
        parse_evidence(b"\x11\xe0\x01\xff" + data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_parse_mutated_vector(data: st.DataObject) -> None:
    raw = bytearray(_base())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        ev = parse_evidence(bytes(raw[:cut]))
        abi.decode_opaque(ev.response.opaque)
    except MalformedEvidenceError:
        pass


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
_entry = st.fixed_dictionaries(
    {},
    optional={
        "arch": st.sampled_from(["HOPPER", "LS10", 7, None]),
        "evidence": st.one_of(
            st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
            st.text(max_size=20),
            _json_values,
        ),
        "certificate": st.one_of(st.text(max_size=20), _json_values),
        "nonce": st.one_of(st.text(alphabet="0123456789abcdefxyz", max_size=66), _json_values),
        "driver_version": _json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(_entry, max_size=3), _entry, _json_values))
def test_fuzz_json_loader(obj: object) -> None:
    with contextlib.suppress(MalformedEvidenceError):
        formats.load(json.dumps(obj).encode())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_loader_random_bytes(data: bytes) -> None:
    for candidate in (data, b"[" + data, b"11e0" + data.hex().encode(), b"\x11\xe0" + data):
        with contextlib.suppress(MalformedEvidenceError):
            formats.load(candidate)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'[{"evidence": "", "certificate": ""}]', True),
        (b'{"evidence": "", "certificate": ""}', True),
        (b'{"quote": {"evidence": 1}, "certificate": 2}', False),
        (b'[{"evidence": "", "certificate": ""}, 3]', False),
        (b'{"evidence": "certificate"', False),
        (b"11e0" + b"00" * 100, True),
        (b"\x11\xe0" + bytes(100), True),
        (b"\x04\x00" + bytes(100), False),
        (b"11e0zz", False),
    ],
)
def test_sniff_recognises_only_its_formats(data: bytes, expected: bool) -> None:
    assert formats.sniff(data) is expected
