"""The host's vTPM CA (ADR 0035) against a real swtpm: a quote whose AK the CA certified is
``certified`` for a verifier holding the CA root, and for no other; a certificate for
another key is refused; the CA's key is a 0600 file and survives a reload."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.tpm.claims import TpmClaims
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.errors import AttestationError, PolicyViolationError
from sealroom.hostagent.backends.vtpm_ca import VtpmCa
from sealroom.tee.tpm2 import Tpm2Config, Tpm2Provider
from tests.tee.conftest import Swtpm

TPM = kinds.get("tpm")
POLICY = Policy.from_dict({"version": 1, "id": "vtpm-ca", "tpm": {
    "ak_trust": ["certified"], "require_restricted_ak": True,
    "extra_data": {"mode": "nonce", "require_nonce": True}}})  # fmt: skip


def test_ca_certified_ak_and_refusals(swtpm: Swtpm, tmp_path: Path) -> None:
    ca = VtpmCa.load_or_create(tmp_path / "ca")
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    assert VtpmCa.load_or_create(tmp_path / "ca").root == ca.root  # reloaded, not re-made
    provider = Tpm2Provider(Tpm2Config(tcti=swtpm.tcti, state_dir=tmp_path / "tpm2"))
    ak = provider.ak_public()
    nonce = os.urandom(32)
    item = provider.quote(nonce).with_attachments({"ak_cert": ca.certify_ak(ak, "vm1")})
    bundle = EvidenceBundle.single(item)

    ctx = VerifyContext(now=datetime.now(UTC), nonce=nonce, extra_roots=(ca.root,))
    claims = TPM.verify(item, ctx)
    assert isinstance(claims, TpmClaims) and claims.ak_trust == "certified"
    verify_and_appraise(bundle, POLICY, ctx).require_ok()

    other = VtpmCa.load_or_create(tmp_path / "other-ca")  # another host's CA
    ctx_other = VerifyContext(now=datetime.now(UTC), nonce=nonce, extra_roots=(other.root,))
    with pytest.raises(PolicyViolationError, match="ak_trust"):
        verify_and_appraise(bundle, POLICY, ctx_other).require_ok()

    # a certificate the CA issued for another VM's AK does not vouch for this quote
    other_tpm = Tpm2Provider(Tpm2Config(tcti=swtpm.tcti, state_dir=tmp_path / "tpm2b",
                                        ak_handle=0x81010003, ak_algorithm="ecc"))  # fmt: skip
    wrong = provider.quote(nonce).with_attachments(
        {"ak_cert": ca.certify_ak(other_tpm.ak_public(), "vm2")}
    )
    with pytest.raises(AttestationError, match="another key"):
        TPM.verify(wrong, ctx)
