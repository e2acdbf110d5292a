"""Who vouches for a TPM AK: only the verifier (``--ak``, the policy's ``ak_fingerprints``,
or a certificate chain to a root the verifier names). A key the presenter supplies is a
claim, never a pin (ADR 0020)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy, starter_policy
from sealroom.attestation.sim.authority import issue_chain
from sealroom.attestation.tpm.abi import OBJ_RESTRICTED
from sealroom.attestation.tpm.claims import TpmClaims
from sealroom.attestation.verifier import verify_and_appraise

from ._fakes import FakeAk, make_item

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NONCE = b"fresh nonce"
CTX = VerifyContext(now=NOW, nonce=NONCE)


def _software_key_envelope(ak: FakeAk) -> EvidenceItem:
    """What an attacker hands a verifier: a quote over made-up PCRs, signed by a plain
    software key, with that key as the envelope's ``ak`` attachment (SPKI PEM)."""
    pem = ak.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return make_item(ak, nonce=NONCE, carry_ak=False).with_attachments({"ak": pem})


def _starter() -> Policy:
    return Policy.loads(starter_policy(["tpm"]), "starter")


def test_self_pinned_ak_is_not_pinned() -> None:
    attacker = FakeAk.ecc()
    item = _software_key_envelope(attacker)
    # Through the envelope JSON, as the attacker would send it.
    bundle = EvidenceBundle.single(item)
    result = verify_and_appraise(bundle, _starter(), CTX)
    claims = result.submods[0].claims
    assert isinstance(claims, TpmClaims)
    assert claims.ak_trust == "none"
    assert not result.ok
    assert "ak_trust" in [r.field for r in result.failures()]


def test_self_pinned_ak_is_not_pinned_in_the_cli(tmp_path: Path) -> None:
    attacker = FakeAk.ecc()
    env = tmp_path / "evidence.json"
    env.write_text(EvidenceBundle.single(_software_key_envelope(attacker)).to_json())
    pol = tmp_path / "policy.yaml"
    pol.write_text(starter_policy(["tpm"]))
    args = ["attest", "verify", str(env), "--policy", str(pol), "--nonce", NONCE.hex()]
    r = subprocess.run(
        [sys.executable, "-m", "sealroom.cli.main", *args, "--now", NOW.isoformat()],
        capture_output=True,
        text=True,
        env={"SEALROOM_HOME": str(tmp_path), "COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert r.returncode == 4, r.stdout + r.stderr
    assert "ak_trust" in r.stdout


def test_verifier_pin_makes_the_same_key_pinned() -> None:
    ak = FakeAk.ecc()
    item = make_item(ak, nonce=NONCE)  # carries its TPMT_PUBLIC (restricted)
    ctx = replace(CTX, ak_pins=(ak.public().to_bytes(),))
    result = verify_and_appraise(EvidenceBundle.single(item), _starter(), ctx)
    claims = result.submods[0].claims
    assert isinstance(claims, TpmClaims)
    assert claims.ak_trust == "pinned"
    assert result.ok, [r.describe() for r in result.failures()]


def test_policy_ak_fingerprint_is_a_verifier_pin() -> None:
    ak = FakeAk.ecc()
    item = make_item(ak, nonce=NONCE)
    claims_fp = verify_and_appraise(EvidenceBundle.single(item), _starter(), CTX)
    fp = claims_fp.submods[0].claims
    assert isinstance(fp, TpmClaims)
    assert fp.ak_trust == "none"
    policy = Policy.from_dict(
        {
            "version": 1,
            "tpm": {
                "ak_trust": ["pinned"],
                "ak_fingerprints": [fp.ak_fingerprint],
                "require_restricted_ak": True,
                "extra_data": {"mode": "nonce"},
            },
        }
    )
    result = verify_and_appraise(EvidenceBundle.single(item), policy, CTX)
    assert result.ok, [r.describe() for r in result.failures()]
    rule = next(r for r in result.all_rules() if r.field == "ak_trust")
    assert "policy ak_fingerprints" in rule.got
    # Another key in the same evidence shape is not pinned by that list.
    other = make_item(FakeAk.ecc(), nonce=NONCE)
    assert not verify_and_appraise(EvidenceBundle.single(other), policy, CTX).ok


def test_starter_policy_rejects_an_unrestricted_pinned_ak() -> None:
    ak = FakeAk.ecc()
    pub = ak.public()
    unrestricted = replace(pub, object_attributes=pub.object_attributes & ~OBJ_RESTRICTED)
    item = make_item(ak, nonce=NONCE, carry_ak=False)
    ctx = replace(CTX, ak_pins=(unrestricted.to_bytes(),))
    result = verify_and_appraise(EvidenceBundle.single(item), _starter(), ctx)
    assert [r.field for r in result.failures()] == ["ak_restricted"]


def test_tpm_ak_certified_by_a_sim_root_is_simulated() -> None:
    issued = issue_chain(NOW, rsa_bits=2048)
    ak = FakeAk.ecc()
    ak_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "sim AK")]))
        .issuer_name(issued.keys.ask.subject)
        .public_key(ak.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(
            issued.ask_key,
            hashes.SHA384(),
            rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48),
        )
    )
    der = serialization.Encoding.DER
    item = make_item(ak, nonce=NONCE).with_attachments(
        {"ak_cert": ak_cert.public_bytes(der), "cert": issued.keys.ask.public_bytes(der)}
    )
    ctx = replace(CTX, extra_roots=(issued.keys.ark,))
    result = verify_and_appraise(EvidenceBundle.single(item), _starter(), ctx)
    claims = result.submods[0].claims
    assert isinstance(claims, TpmClaims)
    assert claims.ak_trust == "certified"
    assert claims.simulated is True
    assert [r.field for r in result.failures()] == ["simulated"]
