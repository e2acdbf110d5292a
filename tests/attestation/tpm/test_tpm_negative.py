"""TPM quote checks: each test is named after the defect it plants."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.tpm.abi import Alg, EccCurve, parse_attest
from sealroom.attestation.tpm.claims import TpmClaims
from sealroom.attestation.tpm.formats import pcrs_json
from sealroom.attestation.tpm.gce import parse_gce_attestation
from sealroom.attestation.verifier import VerifiedItem, appraise
from sealroom.attestation.x509util import load_certificate, load_certificates
from sealroom.errors import AttestationError, MalformedEvidenceError, UnavailableError

from ._fakes import FakeAk, make_item, pcr_values

TPM = kinds.get("tpm")
NOW = datetime(2025, 6, 1, tzinfo=UTC)
CTX = VerifyContext(now=NOW, nonce=b"fresh nonce")


def pinned(*aks: bytes) -> VerifyContext:
    """CTX with the verifier pinning ``aks`` (what ``--ak`` does)."""
    return replace(CTX, ak_pins=aks)


def _verify(item: EvidenceItem, ctx: VerifyContext = CTX) -> TpmClaims:
    claims = TPM.verify(item, ctx)
    assert isinstance(claims, TpmClaims)
    return claims


def _appraise(
    item: EvidenceItem, claims: TpmClaims, section: Mapping[str, Any], ctx: VerifyContext = CTX
) -> list[str]:
    policy = Policy.from_dict({"version": 1, "tpm": section})
    if "extra_data" not in section:
        ctx = replace(ctx, nonce=None)  # a nonce the policy does not bind is refused
    result = appraise([VerifiedItem("tpm0", item, claims)], policy, ctx)
    return [r.field for r in result.failures()]


@pytest.mark.parametrize(
    "ak",
    [
        pytest.param(lambda: FakeAk.rsa(Alg.RSASSA), id="rsassa-sha256"),
        pytest.param(lambda: FakeAk.rsa(Alg.RSAPSS), id="rsapss-sha256"),
        pytest.param(lambda: FakeAk.rsa(Alg.RSASSA, Alg.SHA384), id="rsassa-sha384"),
        pytest.param(lambda: FakeAk.ecc(EccCurve.NIST_P256), id="ecdsa-p256"),
        pytest.param(lambda: FakeAk.ecc(EccCurve.NIST_P384, Alg.SHA384), id="ecdsa-p384"),
    ],
)
def test_good_quote_each_signature_scheme_verifies_pinned(ak: object) -> None:
    fake = ak()  # type: ignore[operator]
    assert isinstance(fake, FakeAk)
    item = make_item(fake)
    claims = _verify(item, pinned(fake.public().to_bytes()))
    assert claims.ak_trust == "pinned"
    assert claims.extra_data == b"fresh nonce"
    assert claims.ak_restricted is True
    assert _appraise(item, claims, {"extra_data": {"mode": "nonce"}}) == []


def test_pinned_ak_as_pem_spki_is_pinned() -> None:
    from cryptography.hazmat.primitives import serialization

    fake = FakeAk.ecc()
    pem = fake.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    item = make_item(fake, carry_ak=False)
    claims = _verify(item, pinned(pem))
    assert claims.ak_trust == "pinned"
    assert claims.ak_restricted is None  # SPKI says nothing about TPM attributes


def test_wrong_nonce_fails_extra_data_rule() -> None:
    fake = FakeAk.rsa()
    item = make_item(fake, nonce=b"stale nonce")
    claims = _verify(item, pinned(fake.public().to_bytes()))
    assert _appraise(item, claims, {"extra_data": {"mode": "nonce"}}) == ["extra_data"]


def test_nonce_with_zero_padding_is_not_the_nonce() -> None:
    fake = FakeAk.rsa()
    item = make_item(fake, nonce=b"fresh nonce\x00\x00")
    claims = _verify(item, pinned(fake.public().to_bytes()))
    assert _appraise(item, claims, {"extra_data": {"mode": "nonce"}}) == ["extra_data"]


def test_wrong_pcr_values_fail_the_pcr_digest() -> None:
    fake = FakeAk.rsa()
    item = make_item(fake)
    values = pcr_values()
    values[3] = bytes(32)
    forged = item.with_attachments({"pcrs": pcrs_json({Alg.SHA256: values})})
    with pytest.raises(AttestationError) as e:
        _verify(forged)
    assert e.value.code == "tpm-pcr-digest-mismatch"


def test_missing_pcr_values_are_unavailable() -> None:
    fake = FakeAk.rsa()
    item = make_item(fake)
    values = {i: v for i, v in pcr_values().items() if i != 5}
    with pytest.raises(UnavailableError, match="PCR 5"):
        _verify(item.with_attachments({"pcrs": pcrs_json({Alg.SHA256: values})}))


def test_signature_by_another_ak_is_rejected() -> None:
    ak, other = FakeAk.rsa(), FakeAk.rsa()
    item = make_item(ak, signer=other)
    with pytest.raises(AttestationError) as e:
        _verify(item)
    assert e.value.code == "tpm-quote-signature-invalid"


def test_ecdsa_signature_by_another_ak_is_rejected() -> None:
    ak, other = FakeAk.ecc(), FakeAk.ecc()
    with pytest.raises(AttestationError, match="does not verify"):
        _verify(make_item(ak, signer=other))


def test_pinned_ak_differs_from_the_ak_the_evidence_carries() -> None:
    ak, other = FakeAk.rsa(), FakeAk.rsa()
    item = make_item(ak)
    with pytest.raises(AttestationError) as e:
        _verify(item, pinned(other.public().to_bytes()))
    assert e.value.code == "tpm-ak-mismatch"
    # A presenter's extra "ak" attachment disagreeing with the carried AK is a mismatch too.
    with pytest.raises(AttestationError) as e:
        _verify(item.with_attachments({"ak": other.public().to_bytes()}))
    assert e.value.code == "tpm-ak-mismatch"


def test_pinned_ak_alone_rejects_a_quote_signed_by_another_key() -> None:
    ak, other = FakeAk.ecc(), FakeAk.ecc()
    item = make_item(ak, signer=other, carry_ak=False)
    with pytest.raises(AttestationError):
        _verify(item, pinned(ak.public().to_bytes()))


def test_flipped_byte_in_tpms_attest_breaks_the_signature() -> None:
    fake = FakeAk.rsa()
    item = make_item(fake)
    data = bytearray(item.data)
    data[40] ^= 0x01  # inside extraData
    with pytest.raises(AttestationError):
        _verify(EvidenceItem("tpm", bytes(data), item.attachments))


def test_signature_scheme_not_matching_the_key_type() -> None:
    ak, ecc = FakeAk.rsa(), FakeAk.ecc()
    item = make_item(ecc, carry_ak=False)
    with pytest.raises(AttestationError) as e:
        _verify(item.with_attachments({"ak": ak.public().to_bytes()}))
    assert e.value.code == "tpm-signature-scheme-mismatch"
    with pytest.raises(AttestationError) as e:
        _verify(item, pinned(ak.public().to_bytes()))
    assert e.value.code == "tpm-ak-mismatch"  # no pinned AK verifies it


def test_no_ak_at_all_is_unavailable() -> None:
    with pytest.raises(UnavailableError, match="--ak"):
        _verify(make_item(FakeAk.rsa(), carry_ak=False))


def test_unpinned_ak_is_ak_trust_none_and_rejected_by_default_policy() -> None:
    item = make_item(FakeAk.rsa())
    claims = _verify(item)
    assert claims.ak_trust == "none"
    assert _appraise(item, claims, {}) == ["ak_trust"]
    assert _appraise(item, claims, {"ak_trust": ["none"]}) == []


def test_ak_fingerprint_not_in_policy_pin_list() -> None:
    item = make_item(FakeAk.rsa())
    claims = _verify(item)
    section = {"ak_trust": ["none"], "ak_fingerprints": ["00" * 32]}
    assert _appraise(item, claims, section) == ["ak_fingerprint"]
    section["ak_fingerprints"] = [claims.ak_fingerprint]
    assert _appraise(item, claims, section) == []


def test_unexpected_pcr_value_names_the_index() -> None:
    fake = FakeAk.rsa()
    item = make_item(fake)
    claims = _verify(item, pinned(fake.public().to_bytes()))
    section = {"pcrs": {"sha256": {4: ["11" * 32], 7: [claims.pcrs["sha256"][7].hex()]}}}
    assert _appraise(item, claims, section) == ["pcrs.sha256[4]"]


def test_policy_pcr_outside_the_quote_fails() -> None:
    fake = FakeAk.rsa()
    item = make_item(fake, indices=(0, 1))
    claims = _verify(item, pinned(fake.public().to_bytes()))
    # PCR 9 was supplied (in the pcrs attachment) but never quoted: not a claim.
    assert 9 not in claims.pcrs["sha256"]
    section = {"pcrs": {"sha256": {9: [pcr_values()[9].hex()]}}}
    assert _appraise(item, claims, section) == ["pcrs.sha256[9]"]


def test_firmware_below_minimum() -> None:
    fake = FakeAk.rsa()
    item = make_item(fake)
    claims = _verify(item, pinned(fake.public().to_bytes()))
    assert _appraise(item, claims, {"min_firmware_version": "0x3000000000000000"}) == [
        "firmware_version"
    ]


def test_policy_pcr_value_of_the_wrong_size_is_a_policy_error() -> None:
    from sealroom.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="sha256"):
        Policy.from_dict({"version": 1, "tpm": {"pcrs": {"sha256": {0: ["00" * 20]}}}})


def test_raw_attest_without_signature_is_malformed() -> None:
    item = make_item(FakeAk.rsa())
    with pytest.raises(MalformedEvidenceError, match="signature"):
        _verify(EvidenceItem("tpm", item.data))


# ----------------------------------------------------------------------------- GCE


def _gce_bytes(vectors: Path) -> bytes:
    return (vectors / "vtpm" / "gce_shielded_vm" / "attestation_nonce9009.pb").read_bytes()


def _gce_roots(vectors: Path) -> tuple[object, ...]:
    d = vectors / "vtpm" / "gce_shielded_vm"
    return (
        load_certificate((d / "tpm_ek_root_1.cer").read_bytes()),
        load_certificate((d / "tpm_ek_intermediate_2.crt").read_bytes()),
    )


def test_gce_event_log_tampered_fails_replay(vectors: Path) -> None:
    from dataclasses import replace

    g = parse_gce_attestation(_gce_bytes(vectors))
    log = bytearray(g.event_log)
    # The first TCG_PCR_EVENT2 after the Spec ID event: pcr(4) type(4) count(4) alg(2) digest.
    spec_end = 32 + int.from_bytes(log[28:32], "little")
    log[spec_end + 14] ^= 0x80
    tampered = replace(g, event_log=bytes(log)).to_bytes()
    ctx = VerifyContext(now=NOW, extra_roots=_gce_roots(vectors))  # type: ignore[arg-type]
    with pytest.raises(AttestationError) as e:
        _verify(EvidenceItem("tpm", tampered), ctx)
    assert e.value.code == "tpm-eventlog-replay-mismatch"


def test_gce_event_log_with_an_event_removed_fails_replay(vectors: Path) -> None:
    from dataclasses import replace

    from sealroom.attestation.tpm.eventlog import Event, parse_event_log

    g = parse_gce_attestation(_gce_bytes(vectors))
    log = parse_event_log(g.event_log)
    ev = log.events[5]
    # Re-encode the log without event 5: find its bytes by layout.
    sizes = {a: s for a, s in log.algorithms.items()}

    def enc(e: Event) -> bytes:
        out = struct.pack("<III", e.pcr, e.event_type, len(e.digests))
        for a, d in e.digests.items():
            assert len(d) == sizes[a]
            out += struct.pack("<H", a) + d
        return out + struct.pack("<I", len(e.data)) + e.data

    head_len = 32 + int.from_bytes(g.event_log[28:32], "little")
    body = b"".join(enc(e) for e in log.events if e is not ev)
    assert g.event_log[head_len:] == b"".join(enc(e) for e in log.events)
    tampered = replace(g, event_log=g.event_log[:head_len] + body).to_bytes()
    ctx = VerifyContext(now=NOW, extra_roots=_gce_roots(vectors))  # type: ignore[arg-type]
    with pytest.raises(AttestationError, match=f"PCR {ev.pcr}"):
        _verify(EvidenceItem("tpm", tampered), ctx)


def test_gce_pcr_value_swapped_fails_the_pcr_digest(vectors: Path) -> None:
    from dataclasses import replace

    g = parse_gce_attestation(_gce_bytes(vectors))
    q = g.quotes[1]
    pcrs = dict(q.pcrs)
    pcrs[23] = b"\x01" * 32
    bad = replace(g, quotes=(g.quotes[0], replace(q, pcrs=pcrs), g.quotes[2])).to_bytes()
    with pytest.raises(AttestationError) as e:
        _verify(EvidenceItem("tpm", bad), VerifyContext(now=NOW))
    assert e.value.code == "tpm-pcr-digest-mismatch"


def test_gce_ak_cert_against_another_root_is_not_certified(vectors: Path) -> None:
    chain = vectors / "amd" / "kds_cert_chains" / "milan_vcek_cert_chain.pem"
    other_root = load_certificates(chain.read_bytes())[1]  # AMD's ARK: not Google's
    claims = _verify(
        EvidenceItem("tpm", _gce_bytes(vectors)),
        VerifyContext(now=NOW, extra_roots=(other_root,)),
    )
    assert claims.ak_trust == "none"
    assert claims.ak_certification is not None
    assert "does not chain" in claims.ak_certification


def test_gce_pinned_foreign_ak_is_a_mismatch(vectors: Path) -> None:
    item = EvidenceItem("tpm", _gce_bytes(vectors))
    with pytest.raises(AttestationError) as e:
        _verify(item, VerifyContext(now=NOW, ak_pins=(FakeAk.rsa().public().to_bytes(),)))
    assert e.value.code == "tpm-ak-mismatch"


def test_gce_quote_attest_roundtrips(vectors: Path) -> None:
    g = parse_gce_attestation(_gce_bytes(vectors))
    for q in g.quotes:
        assert parse_attest(q.attest).to_bytes() == q.attest
    assert parse_gce_attestation(g.to_bytes()) == g
