"""Hypothesis fuzzing of every TPM parser: only MalformedEvidenceError may escape."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.tpm import abi, eventlog, gce, protowire
from sealroom.attestation.tpm.formats import decode_tpm_item, load_ak, parse_pcrs_json
from sealroom.errors import MalformedEvidenceError

from ._fakes import FakeAk, make_item

REPO = Path(__file__).resolve().parents[3]
VTPM = (REPO / ".." / "shared" / "vectors" / "vtpm").resolve()
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_ITEM = make_item(FakeAk.ecc())
_RSA_PUB = FakeAk.rsa().public().to_bytes()
SEEDS: dict[str, bytes] = {
    "attest": _ITEM.data,
    "signature": _ITEM.attachments["signature"],
    "public_ecc": _ITEM.attachments["ak_pub"],
    "public_rsa": _RSA_PUB,
}
_GCE = VTPM / "gce_shielded_vm" / "attestation_nonce9009.pb"
if _GCE.is_file():
    _g = gce.parse_gce_attestation(_GCE.read_bytes())
    SEEDS["gce"] = _GCE.read_bytes()
    SEEDS["eventlog"] = _g.event_log[:3000]
else:  # still fuzz with a synthetic SHA-1 log
    SEEDS["gce"] = b"\x0a\x00"
    SEEDS["eventlog"] = b"\x00" * 32


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """The seed with a few bytes flipped, truncated or extended; plus random bytes."""

    @st.composite
    def _mut(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(0, 4))):
            if not data:
                break
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data = data[:cut]
        if draw(st.booleans()):
            data += draw(st.binary(max_size=16))
        return bytes(data)

    return st.one_of(_mut(), st.binary(max_size=512))


def _only_malformed(fn: Callable[[bytes], object], data: bytes) -> None:
    try:
        fn(data)
    except MalformedEvidenceError:
        pass


@FUZZ
@given(mutated(SEEDS["attest"]))
def test_fuzz_tpms_attest(data: bytes) -> None:
    def roundtrip(b: bytes) -> None:
        a = abi.parse_attest(b)
        assert a.to_bytes() == b
        for s in a.pcr_select:
            assert all(0 <= i < 256 for i in s.indices)

    _only_malformed(roundtrip, data)


@FUZZ
@given(mutated(SEEDS["signature"]))
def test_fuzz_tpmt_signature(data: bytes) -> None:
    def roundtrip(b: bytes) -> None:
        assert abi.parse_signature(b).to_bytes() == b

    _only_malformed(roundtrip, data)


@FUZZ
@given(st.one_of(mutated(SEEDS["public_ecc"]), mutated(SEEDS["public_rsa"])))
def test_fuzz_tpmt_public(data: bytes) -> None:
    def roundtrip(b: bytes) -> None:
        p = abi.parse_public(b)
        assert p.to_bytes() == b
        p.public_key()
        p.name()

    _only_malformed(roundtrip, data)
    _only_malformed(lambda b: load_ak(b, "ak"), data)


@FUZZ
@given(mutated(SEEDS["eventlog"]))
def test_fuzz_event_log(data: bytes) -> None:
    def parse_and_replay(b: bytes) -> None:
        log = eventlog.parse_event_log(b)
        for alg in log.algorithms:
            eventlog.replay(log, alg)

    _only_malformed(parse_and_replay, data)


@FUZZ
@given(st.one_of(mutated(SEEDS["gce"][:400]), mutated(SEEDS["gce"])))
def test_fuzz_protobuf_and_gce_attestation(data: bytes) -> None:
    _only_malformed(lambda b: protowire.parse_message(b, "fuzz"), data)
    _only_malformed(gce.parse_gce_attestation, data)
    assert gce.looks_like_gce_attestation(data) in (True, False)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_pcrs_json_and_tpm_kind(data: bytes) -> None:
    _only_malformed(parse_pcrs_json, data)
    kind = kinds.get("tpm")
    if kind.sniff(data):
        _only_malformed(kind.load, data)
    _only_malformed(lambda b: decode_tpm_item(EvidenceItem("tpm", b)), data)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_parses_unmutated(name: str) -> None:
    parser: dict[str, Callable[[bytes], object]] = {
        "attest": abi.parse_attest,
        "signature": abi.parse_signature,
        "public_ecc": abi.parse_public,
        "public_rsa": abi.parse_public,
        "gce": gce.parse_gce_attestation,
        "eventlog": lambda b: b,  # truncated on purpose
    }
    if name == "gce" and not _GCE.is_file():
        pytest.skip(f"vectors absent at {VTPM}")
    parser[name](SEEDS[name])


RUNTIME_SLICE = slice(0x4D4, 0x4D4 + 1110)
_HCL = VTPM / "azure_snp_milan_hcl" / "hcl_report.bin"
_HCL_SEED = _HCL.read_bytes() if _HCL.is_file() else b"HCLA" + bytes(0x4D0)
_AZ_JSON = VTPM / "azure_snp_milan" / "evidence_v1.json"
_AZ_JSON_SEED = _AZ_JSON.read_bytes()[:3000] if _AZ_JSON.is_file() else b'{"version": 1}'


@st.composite
def hcl_mutations(draw: st.DrawFn) -> bytes:
    """The real HCL report with bytes changed in the header, the IGVM header or the JSON."""
    data = bytearray(_HCL_SEED)
    regions = [(0, 0x20), (0x4C0, 0x4D4), (0x4D4, min(len(data), 0x4D4 + 1110))]
    for _ in range(draw(st.integers(1, 4))):
        lo, hi = draw(st.sampled_from(regions))
        if hi > lo:
            data[draw(st.integers(lo, hi - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(st.one_of(hcl_mutations(), mutated(_HCL_SEED[:0x600])))
def test_fuzz_hcl_report_and_runtime_data(data: bytes) -> None:
    from sealroom.attestation.tpm import azure

    def parse(b: bytes) -> None:
        hcl = azure.parse_hcl_report(b)
        assert hcl.to_bytes() == b[: hcl.report_size]
        azure.parse_runtime_data(hcl.runtime_data)

    _only_malformed(parse, data)
    _only_malformed(azure.load_azure, data)
    assert azure.looks_like_azure(data) in (None, "snp", "tdx")


@FUZZ
@given(st.one_of(mutated(_HCL_SEED[RUNTIME_SLICE]), st.binary(max_size=200)))
def test_fuzz_runtime_json(data: bytes) -> None:
    from sealroom.attestation.tpm import azure

    _only_malformed(azure.parse_runtime_data, data)


@FUZZ
@given(mutated(_AZ_JSON_SEED))
def test_fuzz_azure_evidence_json(data: bytes) -> None:
    from sealroom.attestation.tpm import azure

    _only_malformed(azure.load_azure, data)
    for name in ("az-snp-vtpm", "az-tdx-vtpm"):
        kind = kinds.get(name)
        if kind.sniff(data):
            _only_malformed(kind.load, data)
