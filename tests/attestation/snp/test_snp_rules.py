"""The SNP rules of issue 8 section 2, each with a negative test named after the defect.

Real vectors (../shared/vectors/amd) where the rule can be shown on one; otherwise the fake
AMD PKI (sealroom.testing.fake_snp), whose reports and certificates have the real layout
and go through the same production parse/verify/appraise code.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.snp.abi import GuestPolicy, TcbVersion, parse_report
from sealroom.attestation.snp.certs import amd_chains, check_amd_pss
from sealroom.attestation.snp.claims import SnpClaims
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.errors import AttestationError, MalformedEvidenceError
from sealroom.testing.fake_snp import FakeSnpPki

from .test_snp_vectors import VECS, load_vector

SNP = kinds.get("snp")
NOW = datetime(2026, 11, 1, tzinfo=UTC)
DER = serialization.Encoding.DER
TCB = TcbVersion.build(bootloader=3, tee=0, snp=8, microcode=115)


def _ctx(pki: FakeSnpPki) -> VerifyContext:
    return VerifyContext(now=NOW, extra_roots=(pki.ark,))


def _verify(pki: FakeSnpPki, item: EvidenceItem) -> SnpClaims:
    claims = SNP.verify(item, _ctx(pki))
    assert isinstance(claims, SnpClaims)
    return claims


# ---- report signer and chip identity ----------------------------------------------------


def test_mask_chip_key_report_signed_by_vcek_rejected() -> None:
    pki = FakeSnpPki(NOW)
    good = pki.authority.report(measurement=bytes(48))
    _verify(pki, pki.evidence(good))
    bad = pki.sign(replace(good, mask_chip_key=True))  # genuinely signed by the VCEK
    with pytest.raises(AttestationError) as e:
        _verify(pki, pki.evidence(bad))
    assert e.value.code == "snp-mask-chip-key-vcek"
    assert "MASK_CHIP_KEY is 1" in e.value.message


def test_zero_chip_id_skips_hwid() -> None:
    """A MASK_CHIP_ID host reports CHIP_ID all zero: the hwID comparison is skipped (and
    the claims say so) instead of failing as 'another chip'."""
    pki = FakeSnpPki(NOW, chip_id=bytes(64), hwid=b"\x22" * 64)
    claims = _verify(pki, pki.evidence(pki.authority.report(measurement=bytes(48))))
    assert claims.chip_id == bytes(64) and claims.chip_id_checked is False


def test_nonzero_chip_id_still_compared() -> None:
    pki = FakeSnpPki(NOW, chip_id=b"\x11" * 64, hwid=b"\x22" * 64)
    with pytest.raises(AttestationError) as e:
        _verify(pki, pki.evidence(pki.authority.report(measurement=bytes(48))))
    assert e.value.code == "snp-vcek-wrong-chip"


def test_vcek_tcb_above_current_tcb_rejected() -> None:
    """VCEK and REPORTED_TCB agree (snp=8), but CURRENT_TCB says the running SNP
    firmware is 7: a certificate for firmware newer than the running one."""
    pki = FakeSnpPki(NOW, tcb=TCB)
    report = pki.authority.report(measurement=bytes(48), tcb=TCB)
    older = TcbVersion.build(bootloader=3, tee=0, snp=7, microcode=115)
    bad = pki.sign(replace(report, current_tcb_raw=older.raw, committed_tcb_raw=older.raw))
    with pytest.raises(AttestationError) as e:
        _verify(pki, pki.evidence(bad))
    assert e.value.code == "snp-vek-tcb-above-current"
    assert "snpSPL is 8, above CURRENT_TCB's 7" in e.value.message


def test_vcek_tcb_below_current_tcb_accepted(vectors: Path) -> None:
    """Real: milan_trustee's CURRENT_TCB (ucode 210) is above its VCEK's (ucode 115)."""
    v = VECS["milan_trustee"]
    claims = SNP.verify(load_vector(vectors, v), VerifyContext(now=v.now))
    assert isinstance(claims, SnpClaims)
    assert claims.current_tcb.microcode > claims.reported_tcb.microcode


@pytest.mark.parametrize("vmpl", [4, 0xFF, 0xFFFFFFFF])
def test_vmpl_above_3_malformed(vectors: Path, vmpl: int) -> None:
    raw = bytearray((vectors / "amd" / "milan_oak" / "report.bin").read_bytes())
    assert parse_report(bytes(raw)).vmpl == 0
    raw[0x30:0x34] = vmpl.to_bytes(4, "little")
    with pytest.raises(MalformedEvidenceError) as e:
        parse_report(bytes(raw))
    assert f"VMPL is {vmpl}, expected 0-3" in e.value.message


# ---- the AMD chain: pinned RSA-PSS parameters, ARK self-signature -------------------------


def test_embedded_amd_chains_and_real_veks_have_the_pinned_pss_parameters(
    vectors: Path,
) -> None:
    for pc in amd_chains():
        for cert in (pc.intermediate, pc.ark):
            check_amd_pss(cert.public_bytes(DER), f"{pc.product} {pc.vek_kind}")
    for vek in sorted((vectors / "amd").glob("*/v[cl]ek.der")):
        check_amd_pss(vek.read_bytes(), str(vek))


def test_ark_self_signature_checked() -> None:
    """A root with the right name and key (so ASK <- ARK verifies), whose self-signature
    was made by another key. Trusted by name alone before; now refused."""
    pki = FakeSnpPki(NOW)
    forged_ark = pki.resign(pki.ark, key=rsa.generate_private_key(65537, 2048))
    item = pki.evidence(pki.authority.report(measurement=bytes(48)))
    _verify(pki, item)
    with pytest.raises(AttestationError) as e:
        SNP.verify(item, VerifyContext(now=NOW, extra_roots=(forged_ark,)))
    assert e.value.code == "certificate-chain-invalid"
    assert "self-signed" in e.value.message


@pytest.mark.parametrize(
    ("which", "overrides", "needle"),
    [
        ("vcek", {"salt_length": 32}, "saltLength is 32, expected 48"),
        ("vcek", {"mgf_hash": hashes.SHA256()}, "MGF1 hash is 2.16.840.1.101.3.4.2.1"),
        (
            "ask",
            {"hash_alg": hashes.SHA512(), "mgf_hash": hashes.SHA512()},
            "hashAlgorithm is 2.16.840.1.101.3.4.2.3",
        ),
        ("ask", {"salt_length": 64}, "saltLength is 64"),
    ],
)
def test_chain_pss_salt_not_48_rejected(which: str, overrides: dict[str, Any], needle: str) -> None:
    """Each link re-signed with valid RSA-PSS but other parameters than AMD's (SHA-384,
    MGF1-SHA-384, salt 48). pyca/cryptography verifies such a signature happily; the
    pinned parameters refuse it."""
    pki = FakeSnpPki(NOW)
    report = pki.authority.report(measurement=bytes(48))
    cert = pki.vcek if which == "vcek" else pki.ask
    item = pki.evidence(report, **{which: pki.resign(cert, **overrides)})
    with pytest.raises(AttestationError) as e:
        _verify(pki, item)
    assert e.value.code == "snp-chain-signature-params"
    assert needle in e.value.message


# ---- CRL --------------------------------------------------------------------------------


def _with_crl(pki: FakeSnpPki, crl: bytes) -> EvidenceItem:
    return pki.evidence(pki.authority.report(measurement=bytes(48))).with_attachments({"crl": crl})


def test_crl_this_update_in_future_rejected() -> None:
    pki = FakeSnpPki(NOW)
    with pytest.raises(AttestationError) as e:
        _verify(pki, _with_crl(pki, pki.crl(this_update=NOW + timedelta(hours=1))))
    assert e.value.code == "crl-not-yet-valid"
    assert "thisUpdate" in e.value.message


def test_crl_this_update_within_clock_skew_accepted() -> None:
    pki = FakeSnpPki(NOW)
    claims = _verify(pki, _with_crl(pki, pki.crl(this_update=NOW + timedelta(minutes=2))))
    assert claims.crl_checked


def test_crl_pss_salt_not_48_rejected() -> None:
    pki = FakeSnpPki(NOW)
    with pytest.raises(AttestationError) as e:
        _verify(pki, _with_crl(pki, pki.crl(salt_length=20)))
    assert e.value.code == "snp-chain-signature-params"
    assert "AMD CRL" in e.value.message


# ---- appraisal knobs ----------------------------------------------------------------------


def _appraise_vector(vectors: Path, name: str, snp: dict[str, Any]) -> dict[str, bool]:
    v = VECS[name]
    policy = Policy.from_dict({"version": 1, "snp": snp})
    result = verify_and_appraise(
        EvidenceBundle.single(load_vector(vectors, v)), policy, VerifyContext(now=v.now)
    )
    return {r.field.removeprefix("snp."): r.passed for r in result.all_rules()}


def _appraise_fake(pki: FakeSnpPki, item: EvidenceItem, snp: dict[str, Any]) -> dict[str, bool]:
    policy = Policy.from_dict({"version": 1, "allow_simulated": True, "snp": snp})
    result = verify_and_appraise(EvidenceBundle.single(item), policy, _ctx(pki))
    return {r.field.removeprefix("snp."): r.passed for r in result.all_rules()}


def test_provisional_firmware_rejected_when_not_allowed(vectors: Path) -> None:
    """Real: milan_trustee's COMMITTED_TCB (ucode 115) is below CURRENT_TCB (ucode 210)."""
    assert _appraise_vector(vectors, "milan_trustee", {})["COMMITTED_TCB"] is True
    strict = _appraise_vector(vectors, "milan_trustee", {"allow_provisional_firmware": False})
    assert strict["COMMITTED_TCB"] is False
    assert strict["COMMITTED_FIRMWARE"] is True  # 1.52.4 both
    # Committed == current passes the strict rule.
    assert _appraise_vector(vectors, "milan_oak", {"allow_provisional_firmware": False})[
        "COMMITTED_TCB"
    ]


def test_committed_above_current_rejected_even_when_allowed() -> None:
    pki = FakeSnpPki(NOW, tcb=TCB)
    report = pki.authority.report(measurement=bytes(48), tcb=TCB)
    newer = TcbVersion.build(bootloader=3, tee=0, snp=9, microcode=115)
    item = pki.evidence(pki.sign(replace(report, committed_tcb_raw=newer.raw)))
    assert _appraise_fake(pki, item, {"allow_provisional_firmware": True})["COMMITTED_TCB"] is False


@pytest.mark.parametrize(
    ("vector", "knob", "passes"),
    [
        # PLATFORM_INFO: genoa_oak 0x25 (SMT, ECC, ALIAS_CHECK_COMPLETE), milan_gosev_debug
        # 0x1 (SMT), milan_vlek_aws 0x27 (SMT, TSME, ECC, ALIAS_CHECK_COMPLETE).
        ("genoa_oak", {"allow_smt": False}, {"PLATFORM_INFO.SMT_EN": False}),
        ("milan_vlek_aws", {"allow_tsme": False}, {"PLATFORM_INFO.TSME_EN": False}),
        ("genoa_oak", {"allow_tsme": False}, {"PLATFORM_INFO.TSME_EN": True}),
        ("milan_gosev_debug", {"require_ecc": True}, {"PLATFORM_INFO.ECC_EN": False}),
        ("genoa_oak", {"require_ecc": True}, {"PLATFORM_INFO.ECC_EN": True}),
        ("genoa_oak", {"require_rapl_disabled": True}, {"PLATFORM_INFO.RAPL_DIS": False}),
        (
            "genoa_oak",
            {"require_ciphertext_hiding": True},
            {"PLATFORM_INFO.CIPHERTEXT_HIDING_DRAM_EN": False},
        ),
        (
            "milan_gosev_debug",
            {"require_alias_check_complete": True},
            {"PLATFORM_INFO.ALIAS_CHECK_COMPLETE": False},
        ),
        (
            "genoa_oak",
            {"require_alias_check_complete": True},
            {"PLATFORM_INFO.ALIAS_CHECK_COMPLETE": True},
        ),
    ],
)
def test_platform_info_bit_not_as_policy_requires_rejected(
    vectors: Path, vector: str, knob: dict[str, bool], passes: dict[str, bool]
) -> None:
    got = _appraise_vector(vectors, vector, {"platform_info": knob})
    assert {k: got[k] for k in passes} == passes


@pytest.mark.parametrize(
    ("knob", "field"),
    [
        ("require_mem_aes_256_xts", "POLICY.MEM_AES_256_XTS"),
        ("require_rapl_dis", "POLICY.RAPL_DIS"),
        ("require_ciphertext_hiding", "POLICY.CIPHERTEXT_HIDING"),
        ("require_page_swap_disable", "POLICY.PAGE_SWAP_DISABLE"),
    ],
)
def test_guest_policy_bit_required_but_clear_rejected(vectors: Path, knob: str, field: str) -> None:
    """Real: genoa_oak's POLICY is 0x30000 (none of bits 22-25 set)."""
    assert _appraise_vector(vectors, "genoa_oak", {knob: True})[field] is False


@pytest.mark.parametrize("bit", [21, 22, 23, 24, 25])
def test_guest_policy_bits_21_to_25_decoded(bit: int) -> None:
    pki = FakeSnpPki(NOW)
    report = pki.authority.report(measurement=bytes(48))
    item = pki.evidence(pki.sign(replace(report, policy=GuestPolicy(report.policy.raw | 1 << bit))))
    snp = {
        "allow_cxl": False,
        "require_mem_aes_256_xts": True,
        "require_rapl_dis": True,
        "require_ciphertext_hiding": True,
        "require_page_swap_disable": True,
    }
    got = _appraise_fake(pki, item, snp)
    names = {
        21: "CXL_ALLOW",
        22: "MEM_AES_256_XTS",
        23: "RAPL_DIS",
        24: "CIPHERTEXT_HIDING",
        25: "PAGE_SWAP_DISABLE",
    }
    # CXL_ALLOW set fails allow_cxl: false; each require_* passes only for its own bit.
    expected = {f"POLICY.{n}": (b == bit) for b, n in names.items()}
    expected["POLICY.CXL_ALLOW"] = bit != 21
    assert {k: got[k] for k in expected} == expected


def test_cxl_allowed_guest_rejected_by_default() -> None:
    pki = FakeSnpPki(NOW)
    report = pki.authority.report(measurement=bytes(48))
    item = pki.evidence(pki.sign(replace(report, policy=GuestPolicy(report.policy.raw | 1 << 21))))
    assert _appraise_fake(pki, item, {})["POLICY.CXL_ALLOW"] is False


def test_mitigation_vector_missing_required_bit_rejected(vectors: Path) -> None:
    """Real: genoa_oak is a v5 report with LAUNCH/CURRENT_MIT_VECTOR 0x1."""
    ok = _appraise_vector(vectors, "genoa_oak", {"min_mitigations": {"launch": 1, "current": 1}})
    assert ok["LAUNCH_MIT_VECTOR"] and ok["CURRENT_MIT_VECTOR"]
    bad = _appraise_vector(vectors, "genoa_oak", {"min_mitigations": {"current": 0b11}})
    assert bad["CURRENT_MIT_VECTOR"] is False


def test_mitigation_vector_required_on_pre_v5_report_rejected(vectors: Path) -> None:
    """Real: milan_oak is a v3 report; it has no mitigation vector to satisfy a minimum."""
    got = _appraise_vector(vectors, "milan_oak", {"min_mitigations": {"launch": 1}})
    assert got["LAUNCH_MIT_VECTOR"] is False
