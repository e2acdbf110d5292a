"""Real TPM vectors: GCE Shielded VM (go-tpm-tools protobuf) and Trustee's swtpm quote give
the verdicts the vectors README states."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.tpm.abi import parse_attest, parse_public, parse_signature
from sealroom.attestation.tpm.claims import TpmClaims
from sealroom.attestation.tpm.gce import parse_gce_attestation
from sealroom.attestation.verifier import VerifiedItem, appraise, load_evidence
from sealroom.attestation.x509util import load_certificate
from sealroom.errors import PolicyViolationError

TPM = kinds.get("tpm")
NOW = datetime(2025, 6, 1, tzinfo=UTC)
GCE_FW = 0x2016051100162800


def _gce(vectors: Path) -> Path:
    return vectors / "vtpm" / "gce_shielded_vm"


def _gce_ctx(vectors: Path, *, nonce: bytes | None = None) -> VerifyContext:
    d = _gce(vectors)
    roots = (
        load_certificate((d / "tpm_ek_root_1.cer").read_bytes()),
        load_certificate((d / "tpm_ek_intermediate_2.crt").read_bytes()),
    )
    return VerifyContext(now=NOW, extra_roots=roots, nonce=nonce)


@pytest.mark.parametrize(
    ("name", "nonce"), [("attestation_nonce9009.pb", "9009"), ("attestation_no_nonce.pb", "")]
)
def test_gce_attestation_verifies_with_ak_cert_chain_and_event_log(
    vectors: Path, name: str, nonce: str
) -> None:
    data = (_gce(vectors) / name).read_bytes()
    assert TPM.sniff(data)
    (item,) = TPM.load(data).items
    claims = TPM.verify(item, _gce_ctx(vectors))
    assert isinstance(claims, TpmClaims)
    assert claims.verified
    assert claims.format == "gce-attestation"
    assert claims.extra_data.hex() == nonce
    assert claims.firmware_version == GCE_FW
    assert claims.ak_trust == "certified"
    assert claims.ak_certification is not None
    assert "tpm_ek_v1_cloud_host" in claims.ak_certification
    assert claims.ak_algorithm == "rsa-2048"
    assert claims.ak_restricted is True
    assert sorted(claims.pcrs) == ["sha1", "sha256", "sha384"]
    assert all(sorted(v) == list(range(24)) for v in claims.pcrs.values())
    assert [q.hash_alg for q in claims.quotes] == ["sha256"] * 3
    assert claims.event_log is not None
    assert claims.event_log.format == "crypto-agile"
    assert claims.event_log.replayed == {b: tuple(range(10)) for b in ("sha1", "sha256", "sha384")}
    assert len(claims.event_log.events) == 44


def test_gce_ak_cert_key_equals_ak_pub(vectors: Path) -> None:
    g = parse_gce_attestation((_gce(vectors) / "attestation_nonce9009.pb").read_bytes())
    cert = load_certificate(g.ak_cert)
    assert cert.subject.rfc4514_string() == ""  # the README's "empty subject"
    assert cert.public_key() == parse_public(g.ak_pub).public_key()
    for q in g.quotes:
        a = parse_attest(q.attest)
        assert a.extra_data == bytes.fromhex("9009")
        parse_signature(q.signature)


def test_gce_intermediate_as_cert_attachment_and_root_only(vectors: Path) -> None:
    d = _gce(vectors)
    item = EvidenceItem(
        "tpm",
        (d / "attestation_nonce9009.pb").read_bytes(),
        {"cert": (d / "tpm_ek_intermediate_2.crt").read_bytes()},
    )
    ctx = VerifyContext(
        now=NOW, extra_roots=(load_certificate((d / "tpm_ek_root_1.cer").read_bytes()),)
    )
    claims = TPM.verify(item, ctx)
    assert isinstance(claims, TpmClaims)
    assert claims.ak_trust == "certified"


def test_gce_without_roots_is_authentic_but_ak_trust_none_and_default_policy_rejects(
    vectors: Path,
) -> None:
    data = (_gce(vectors) / "attestation_nonce9009.pb").read_bytes()
    ctx = VerifyContext(now=NOW)
    claims = TPM.verify(EvidenceItem("tpm", data), ctx)
    assert isinstance(claims, TpmClaims)
    assert claims.ak_trust == "none"
    assert claims.ak_certification is not None
    assert "no root" in claims.ak_certification
    policy = Policy.from_dict({"version": 1, "tpm": {}})
    result = appraise([VerifiedItem("tpm0", EvidenceItem("tpm", data), claims)], policy, ctx)
    assert not result.ok
    with pytest.raises(PolicyViolationError, match="ak_trust"):
        result.require_ok()


def test_gce_policy_nonce_pcrs_firmware_pass(vectors: Path) -> None:
    data = (_gce(vectors) / "attestation_nonce9009.pb").read_bytes()
    ctx = _gce_ctx(vectors, nonce=bytes.fromhex("9009"))
    claims = TPM.verify(EvidenceItem("tpm", data), ctx)
    assert isinstance(claims, TpmClaims)
    pcr0 = claims.pcrs["sha256"][0].hex()
    policy = Policy.from_dict(
        {
            "version": 1,
            "tpm": {
                "extra_data": {"mode": "nonce"},
                "pcrs": {"sha256": {0: [pcr0]}},
                "min_firmware_version": "0x2016051100162800",
                "require_event_log": True,
                "require_restricted_ak": True,
            },
        }
    )
    result = appraise([VerifiedItem("tpm0", EvidenceItem("tpm", data), claims)], policy, ctx)
    assert result.ok, [r.describe() for r in result.failures()]
    fields = {r.field for r in result.all_rules()}
    assert {
        "ak_trust",
        "extra_data",
        "pcrs.sha256[0]",
        "firmware_version",
        "event_log.replayed",
        "ak_restricted",
    } <= fields


def test_swtpm_trustee_quote_verifies_but_ak_is_unvouched(vectors: Path) -> None:
    data = (vectors / "vtpm" / "swtpm_trustee" / "tpm_evidence.json").read_bytes()
    assert TPM.sniff(data)
    bundle = load_evidence(data)
    (item,) = bundle.items
    assert item.kind == "tpm"
    claims = TPM.verify(item, VerifyContext(now=NOW))
    assert isinstance(claims, TpmClaims)
    assert claims.ak_trust == "none"
    assert claims.firmware_version == 0x2019102300163636  # libtpms / swtpm, not hardware
    # A fresh swtpm: PCRs 17-22 (DRTM) start as all ones, the others as zeros.
    assert claims.pcrs["sha256"] == {
        i: (b"\xff" * 32 if 17 <= i <= 22 else bytes(32)) for i in range(24)
    }


def test_swtpm_trustee_quote_with_pinned_ak_is_pinned(vectors: Path) -> None:
    data = (vectors / "vtpm" / "swtpm_trustee" / "tpm_evidence.json").read_bytes()
    (item,) = TPM.load(data).items
    claims = TPM.verify(item, VerifyContext(now=NOW, ak_pins=(item.attachments["ak_pub"],)))
    assert isinstance(claims, TpmClaims)
    assert claims.ak_trust == "pinned"


def test_inspect_parses_without_checking(vectors: Path) -> None:
    data = (_gce(vectors) / "attestation_nonce9009.pb").read_bytes()
    claims = TPM.inspect(EvidenceItem("tpm", data))
    assert isinstance(claims, TpmClaims)
    assert not claims.verified
    assert claims.ak_trust == "none"
    assert claims.event_log is not None and claims.event_log.replayed == {}
    assert len(claims.event_log.events) == 44
    # A bare TPMS_ATTEST (no signature, no PCRs) still inspects.
    g = parse_gce_attestation(data)
    bare = TPM.inspect(TPM.load(g.quotes[0].attest).items[0])
    assert isinstance(bare, TpmClaims)
    assert bare.quotes[0].signature_alg == "null" and bare.pcrs == {}
