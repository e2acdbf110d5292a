"""Negative cases: each rejected with the right error class, through production code."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sealroom.attestation import kinds
from sealroom.attestation.collateral import DirectoryCollateral
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy, starter_policy
from sealroom.attestation.snp.abi import SIGNED_SIZE, TcbVersion, parse_report
from sealroom.attestation.snp.claims import SnpClaims
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.errors import (
    AttestationError,
    MalformedEvidenceError,
    PolicyViolationError,
    UnavailableError,
)
from sealroom.testing.fake_snp import FakeSnpPki

from .test_snp_vectors import VECS, load_vector

SNP = kinds.get("snp")
NOW = datetime(2026, 11, 1, tzinfo=UTC)
DER = serialization.Encoding.DER


def amd(vectors: Path, rel: str) -> bytes:
    return (vectors / "amd" / rel).read_bytes()


def with_cert(vectors: Path, report: str, cert: str) -> EvidenceItem:
    item = SNP.load(amd(vectors, report)).items[0]
    return item.with_attachments({"cert": amd(vectors, cert)})


# ---- authenticity ----------------------------------------------------------------------


def test_debug_policy_bit_set_rejected_by_default_policy(vectors: Path) -> None:
    v = VECS["milan_gosev_debug"]
    policy = Policy.loads(starter_policy(["snp"]))
    result = verify_and_appraise(
        EvidenceBundle.single(load_vector(vectors, v)), policy, VerifyContext(now=v.now)
    )
    with pytest.raises(PolicyViolationError) as e:
        result.require_ok()
    assert [r.field for r in e.value.result.failures()] == ["POLICY.DEBUG"]
    assert "POLICY.DEBUG is true, policy wants false" in e.value.diagnostics()


@pytest.mark.parametrize(
    "neg", ["NEG_vcek_tampered_hwid_legacy.der", "NEG_vcek_tampered_hwid_octetstring.der"]
)
def test_tampered_vcek_rejected(vectors: Path, neg: str) -> None:
    item = with_cert(vectors, "milan_trustee/report.bin", f"milan_trustee/{neg}")
    with pytest.raises(AttestationError) as e:
        SNP.verify(item, VerifyContext(now=VECS["milan_trustee"].now))
    assert e.value.code == "certificate-chain-invalid"


def test_vcek_of_other_report_rejected(vectors: Path) -> None:
    """A genuine Milan VCEK, but of another chip/TCB than the report's."""
    item = with_cert(vectors, "milan_oak/report.bin", "milan_virtee/vcek.der")
    with pytest.raises(AttestationError):
        SNP.verify(item, VerifyContext(now=datetime(2025, 6, 1, tzinfo=UTC)))


def test_vcek_from_other_chip_rejected() -> None:
    """Right key, right TCB, but the certificate's hwID names another chip."""
    pki = FakeSnpPki(NOW, chip_id=b"\x11" * 64, hwid=b"\x22" * 64)
    report = pki.authority.report(measurement=bytes(48))
    ctx = VerifyContext(now=NOW, extra_roots=(pki.ark,))
    with pytest.raises(AttestationError) as e:
        SNP.verify(pki.authority.evidence(report), ctx)
    assert e.value.code == "snp-vcek-wrong-chip"
    assert "hwID is 2222" in e.value.message


def test_vcek_for_other_tcb_rejected() -> None:
    pki = FakeSnpPki(NOW, tcb=TcbVersion.build(bootloader=3, tee=0, snp=8, microcode=115))
    report = pki.authority.report(
        measurement=bytes(48), tcb=TcbVersion.build(bootloader=3, tee=0, snp=9, microcode=115)
    )
    with pytest.raises(AttestationError) as e:
        SNP.verify(pki.authority.evidence(report), VerifyContext(now=NOW, extra_roots=(pki.ark,)))
    assert e.value.code == "snp-vek-tcb-mismatch"
    assert "snpSPL is 8, REPORTED_TCB says 9" in e.value.message


def _signed_positions() -> list[int]:
    rng = random.Random(1184)  # noqa: S311 - sampling, not security
    return sorted(set(rng.sample(range(SIGNED_SIZE), 96)) | {0x0, 0x50, 0x90, 0x1A0, 0x29F})


@pytest.mark.parametrize("pos", _signed_positions())
def test_flipped_signed_byte_rejected(vectors: Path, pos: int) -> None:
    v = VECS["milan_oak"]
    item = load_vector(vectors, v)
    data = bytearray(item.data)
    data[pos] ^= 0x01
    bad = EvidenceItem(kind="snp", data=bytes(data), attachments=item.attachments)
    with pytest.raises((AttestationError, MalformedEvidenceError)) as e:
        SNP.verify(bad, VerifyContext(now=v.now))
    if isinstance(e.value, AttestationError):
        assert e.value.code in (
            "snp-signature-invalid",
            "snp-vek-tcb-mismatch",
            "snp-vcek-wrong-chip",
            "snp-product-mismatch",
            "snp-wrong-product-root",
            "snp-signature-algorithm",
            "snp-unsigned",
        )


@pytest.mark.parametrize("pos", [0x2A0, 0x2A0 + 40, 0x2E8, 0x2E8 + 71])
def test_flipped_signature_byte_rejected(vectors: Path, pos: int) -> None:
    v = VECS["genoa_oak"]
    item = load_vector(vectors, v)
    data = bytearray(item.data)
    data[pos] ^= 0x80
    with pytest.raises(AttestationError):
        SNP.verify(EvidenceItem("snp", bytes(data), item.attachments), VerifyContext(now=v.now))


def test_wrong_product_root_forced(vectors: Path) -> None:
    """A Milan v2 report (no CPUID) checked as Genoa: the Milan VCEK is not a Genoa cert."""
    v = VECS["milan_virtee"]
    ctx = VerifyContext(now=v.now, options={"snp.product": "Genoa"})
    with pytest.raises(AttestationError) as e:
        SNP.verify(load_vector(vectors, v), ctx)
    assert e.value.code == "snp-product-mismatch"


def test_genoa_report_with_milan_vcek(vectors: Path) -> None:
    item = with_cert(vectors, "genoa_oak/report.bin", "milan_oak/vcek.der")
    with pytest.raises(AttestationError) as e:
        SNP.verify(item, VerifyContext(now=datetime(2025, 9, 1, tzinfo=UTC)))
    assert e.value.code == "snp-product-mismatch"


def test_vcek_issued_by_unknown_ask() -> None:
    """A real-looking VCEK chain whose ASK is not AMD's and whose root nobody trusts."""
    pki = FakeSnpPki(NOW)
    report = pki.authority.report(measurement=bytes(48))
    with pytest.raises(AttestationError) as e:
        SNP.verify(pki.authority.evidence(report), VerifyContext(now=NOW))
    assert e.value.code == "untrusted-root"


def test_evidence_cannot_bring_its_own_root() -> None:
    pki = FakeSnpPki(NOW)
    item = pki.authority.evidence(pki.authority.report(measurement=bytes(48)))
    item = item.with_attachments({"ark": pki.ark.public_bytes(DER)})
    with pytest.raises(AttestationError) as e:
        SNP.verify(item, VerifyContext(now=NOW))
    assert e.value.code == "untrusted-root"


def test_expired_vlek_without_pinned_time(vectors: Path) -> None:
    """The AWS VLEK expired 2025-12-10: checking 'now' (no --now) fails."""
    item = load_vector(vectors, VECS["milan_vlek_aws"])
    with pytest.raises(AttestationError) as e:
        SNP.verify(item, VerifyContext(now=datetime(2026, 11, 21, tzinfo=UTC)))
    assert e.value.code == "certificate-expired"
    assert "VLEK expired" in e.value.message


def test_vcek_not_yet_valid(vectors: Path) -> None:
    item = load_vector(vectors, VECS["turin_oak"])
    with pytest.raises(AttestationError) as e:
        SNP.verify(item, VerifyContext(now=datetime(2024, 1, 1, tzinfo=UTC)))
    assert e.value.code == "certificate-not-yet-valid"


def test_vlek_report_without_its_vlek(vectors: Path) -> None:
    item = SNP.load(amd(vectors, "milan_vlek_aws_trustee/report.bin")).items[0]
    with pytest.raises(UnavailableError) as e:
        SNP.verify(item, VerifyContext(now=datetime(2025, 6, 1, tzinfo=UTC)))
    assert e.value.exit_code == 3 and "VLEK" in e.value.message


def test_vlek_report_with_a_vcek_instead(vectors: Path) -> None:
    item = with_cert(vectors, "milan_vlek_aws_trustee/report.bin", "milan_oak/vcek.der")
    with pytest.raises(UnavailableError) as e:
        SNP.verify(item, VerifyContext(now=datetime(2025, 6, 1, tzinfo=UTC)))
    assert "got VCEK" in e.value.message


def test_missing_vcek_is_unavailable_not_a_verdict(vectors: Path) -> None:
    item = SNP.load(amd(vectors, "milan_oak/report.bin")).items[0]
    with pytest.raises(UnavailableError) as e:
        SNP.verify(item, VerifyContext(now=datetime(2025, 6, 1, tzinfo=UTC)))
    assert "kdsintf.amd.com/vcek/v1/Milan/" in e.value.message


def test_vcek_from_offline_collateral_directory(vectors: Path, tmp_path: Path) -> None:
    (tmp_path / "vcek.der").write_bytes(amd(vectors, "milan_oak/vcek.der"))
    item = SNP.load(amd(vectors, "milan_oak/report.bin")).items[0]
    ctx = VerifyContext(
        now=datetime(2025, 6, 1, tzinfo=UTC), collateral=DirectoryCollateral(tmp_path)
    )
    claims = SNP.verify(item, ctx)
    assert isinstance(claims, SnpClaims) and claims.product == "Milan"


def test_unsigned_report_rejected() -> None:
    pki = FakeSnpPki(NOW)
    from sealroom.attestation.snp.abi import SigningKey

    report = replace(pki.authority.report(measurement=bytes(48)), signing_key=SigningKey.NONE)
    item = EvidenceItem("snp", report.to_bytes(), pki.authority.evidence(report).attachments)
    with pytest.raises(AttestationError) as e:
        SNP.verify(item, VerifyContext(now=NOW, extra_roots=(pki.ark,)))
    assert e.value.code == "snp-unsigned"


# ---- revocation --------------------------------------------------------------------------


def _crl_case(pki: FakeSnpPki, crl: bytes) -> EvidenceItem:
    item = pki.authority.evidence(pki.authority.report(measurement=bytes(48)))
    return item.with_attachments({"crl": crl})


def test_crl_not_revoking_marks_revocation_checked() -> None:
    pki = FakeSnpPki(NOW)
    claims = SNP.verify(_crl_case(pki, pki.crl()), VerifyContext(now=NOW, extra_roots=(pki.ark,)))
    assert isinstance(claims, SnpClaims) and claims.crl_checked


def test_revoked_ask_rejected() -> None:
    pki = FakeSnpPki(NOW)
    with pytest.raises(AttestationError) as e:
        SNP.verify(
            _crl_case(pki, pki.crl([pki.ask])), VerifyContext(now=NOW, extra_roots=(pki.ark,))
        )
    assert e.value.code == "certificate-revoked"


def test_stale_crl_rejected() -> None:
    pki = FakeSnpPki(NOW)
    crl = pki.crl(next_update=NOW - timedelta(minutes=1))
    with pytest.raises(AttestationError) as e:
        SNP.verify(_crl_case(pki, crl), VerifyContext(now=NOW, extra_roots=(pki.ark,)))
    assert e.value.code == "crl-stale"


def test_crl_from_wrong_issuer_rejected() -> None:
    pki = FakeSnpPki(NOW)
    with pytest.raises(AttestationError) as e:
        SNP.verify(
            _crl_case(pki, pki.crl(signed_by_ask=True)),
            VerifyContext(now=NOW, extra_roots=(pki.ark,)),
        )
    assert e.value.code == "crl-invalid"


def test_crl_signed_by_another_ark_rejected() -> None:
    pki, other = FakeSnpPki(NOW), FakeSnpPki(NOW)
    with pytest.raises(AttestationError) as e:
        SNP.verify(_crl_case(pki, other.crl()), VerifyContext(now=NOW, extra_roots=(pki.ark,)))
    assert e.value.code == "crl-invalid"


def test_require_crl_rule_fails_without_one(vectors: Path) -> None:
    v = VECS["milan_oak"]
    policy = Policy.from_dict({"version": 1, "snp": {"require_crl": True}})
    result = verify_and_appraise(
        EvidenceBundle.single(load_vector(vectors, v)), policy, VerifyContext(now=v.now)
    )
    assert [r.field for r in result.failures()] == ["revocation_checked"]


def test_report_bytes_are_parsed_strictly(vectors: Path) -> None:
    raw = amd(vectors, "milan_oak/report.bin")
    with pytest.raises(MalformedEvidenceError, match="1183 bytes"):
        parse_report(raw[:-1])
    bad = bytearray(raw)
    bad[0x4C] = 1
    with pytest.raises(MalformedEvidenceError, match=r"\[0x4c, 0x50\)"):
        parse_report(bytes(bad))
