"""Hypothesis: only MalformedEvidenceError ever escapes the SNP parsers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealroom.attestation import kinds
from sealroom.attestation.evidence import parse_envelope
from sealroom.attestation.snp.abi import REPORT_SIZE, parse_report
from sealroom.attestation.snp.certs import build_cert_table, parse_cert_table
from sealroom.attestation.snp.foreign import load_thim_json, load_virtee_json
from sealroom.errors import MalformedEvidenceError

from ...conftest import VECTORS

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _seed_report() -> bytes:
    p = VECTORS / "amd" / "milan_oak" / "report.bin"
    if p.is_file():
        return p.read_bytes()
    return (
        bytes([2, 0, 0, 0]) + bytes(4) + (0x30000).to_bytes(8, "little") + bytes(REPORT_SIZE - 16)
    )


SEED = _seed_report()


def _parse_or_malformed(data: bytes) -> None:
    try:
        report = parse_report(data)
    except MalformedEvidenceError:
        return
    assert report.to_bytes() == data  # whatever parses, round-trips exactly


@FUZZ
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_parse_report_random_bytes(data: bytes) -> None:
    _parse_or_malformed(data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, REPORT_SIZE - 1), st.integers(0, 255)), max_size=8))
def test_parse_report_mutations(edits: list[tuple[int, int]]) -> None:
    data = bytearray(SEED)
    for pos, value in edits:
        data[pos] = value
    _parse_or_malformed(bytes(data))


@FUZZ
@given(st.binary(max_size=600))
def test_cert_table_random_bytes(data: bytes) -> None:
    try:
        parse_cert_table(data)
    except MalformedEvidenceError:
        pass


@FUZZ
@given(st.dictionaries(st.sampled_from(["vcek", "vlek", "ask", "ark"]), st.binary(max_size=64)))
def test_cert_table_round_trip(entries: dict[str, bytes]) -> None:
    assert parse_cert_table(build_cert_table(entries)) == entries


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 70000) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=70)
        | st.dictionaries(st.text(max_size=12), children, max_size=8)
    ),
    max_leaves=200,
)


@FUZZ
@given(json_values)
def test_virtee_json_loader(value: object) -> None:
    try:
        load_virtee_json(json.dumps(value).encode())
    except MalformedEvidenceError:
        pass


@FUZZ
@given(st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_envelope_and_sniffing(data: bytes) -> None:
    try:
        parse_envelope(data)
    except MalformedEvidenceError:
        pass
    snp = kinds.get("snp")
    try:
        if snp.sniff(data):
            snp.load(data)
    except MalformedEvidenceError:
        pass


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["raw", "hex", "base64"]))
def test_report_with_trailing_bytes_and_text_forms(extra: bytes, form: str) -> None:
    data = SEED + extra
    text = {"raw": data, "hex": data.hex().encode(), "base64": base64.b64encode(data)}[form]
    snp = kinds.get("snp")
    item = snp.load(text).items[0]
    assert item.data == data
    report = parse_report(item.data, trailing_ok=True)
    assert report.trailing == extra and report.to_bytes() == data


@FUZZ
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_parse_report_trailing_ok_random_bytes(data: bytes) -> None:
    try:
        report = parse_report(SEED[: len(data) % 64] + data, trailing_ok=True)
    except MalformedEvidenceError:
        return
    assert report.to_bytes() == report.raw


@FUZZ
@given(json_values | st.dictionaries(st.sampled_from(["vcekCert", "certificateChain", "tcbm"]),
                                     json_values))  # fmt: skip
def test_thim_json_loader(value: object) -> None:
    try:
        load_thim_json(json.dumps(value).encode())
    except MalformedEvidenceError:
        pass


def test_seed_is_real_when_vectors_present() -> None:
    if (VECTORS / "README.md").is_file():
        assert Path(VECTORS / "amd/milan_oak/report.bin").read_bytes() == SEED
