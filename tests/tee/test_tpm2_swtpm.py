"""The tpm2 evidence provider against a real swtpm: fresh quotes verify with the AK pinned,
and a PCR extend the policy did not expect fails appraisal naming the PCR."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem, parse_envelope
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.tpm.abi import Alg, digest, parse_public
from sealroom.attestation.tpm.claims import TpmClaims
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.errors import AttestationError, InvalidInputError, PolicyViolationError
from sealroom.tee.tpm2 import Tpm2Config, Tpm2Provider

from .conftest import Swtpm

TPM = kinds.get("tpm")
PCR = 16  # the debug PCR: resettable, free for tests


def _provider(swtpm: Swtpm, tmp_path: Path, **kw: Any) -> Tpm2Provider:
    return Tpm2Provider(Tpm2Config(tcti=swtpm.tcti, state_dir=tmp_path / "tpm2", **kw))


def _verify(item: EvidenceItem, nonce: bytes, *pins: bytes) -> TpmClaims:
    claims = TPM.verify(item, VerifyContext(now=datetime.now(UTC), nonce=nonce, ak_pins=pins))
    assert isinstance(claims, TpmClaims)
    return claims


def _policy(pcr_value: bytes) -> Policy:
    return Policy.from_dict(
        {
            "version": 1,
            "id": "swtpm-test",
            "tpm": {
                "ak_trust": ["pinned"],
                "extra_data": {"mode": "nonce"},
                "pcrs": {"sha256": {PCR: [pcr_value.hex()], 0: [bytes(32).hex()]}},
                "require_restricted_ak": True,
            },
        }
    )


def test_fresh_quote_verifies_pinned_then_pcr_extend_fails_policy(
    swtpm: Swtpm, tmp_path: Path
) -> None:
    provider = _provider(swtpm, tmp_path)
    ak = provider.ak_public()
    assert parse_public(ak).has(1 << 16)  # restricted
    nonce = os.urandom(32)
    item = provider.quote(nonce)
    claims = _verify(item, nonce, ak)
    assert claims.ak_trust == "pinned"
    assert claims.extra_data == nonce
    assert claims.ak_restricted is True and claims.ak_fixed_tpm is True
    assert sorted(claims.pcrs["sha256"]) == list(range(24))
    old = claims.pcrs["sha256"][PCR]
    assert old == bytes(32)

    policy = _policy(old)
    ctx = VerifyContext(now=datetime.now(UTC), nonce=nonce, ak_pins=(ak,))
    verify_and_appraise(EvidenceBundle.single(item), policy, ctx).require_ok()

    provider.pcr_extend(PCR, digest(Alg.SHA256, b"something the policy did not expect"))
    nonce2 = os.urandom(32)
    item2 = provider.quote(nonce2)
    claims2 = _verify(item2, nonce2, ak)  # still authentic
    assert claims2.pcrs["sha256"][PCR] != old
    ctx2 = VerifyContext(now=datetime.now(UTC), nonce=nonce2, ak_pins=(ak,))
    result = verify_and_appraise(EvidenceBundle.single(item2), policy, ctx2)
    assert [r.field for r in result.failures()] == [f"pcrs.sha256[{PCR}]"]
    with pytest.raises(PolicyViolationError, match=rf"pcrs\.sha256\[{PCR}\]"):
        result.require_ok()


def test_old_quote_replayed_against_a_new_nonce_fails(swtpm: Swtpm, tmp_path: Path) -> None:
    provider = _provider(swtpm, tmp_path)
    ak = provider.ak_public()
    item = provider.quote(b"monday")
    policy = _policy(bytes(32))
    ctx = VerifyContext(now=datetime.now(UTC), nonce=b"tuesday", ak_pins=(ak,))
    result = verify_and_appraise(EvidenceBundle.single(item), policy, ctx)
    assert [r.field for r in result.failures()] == ["extra_data"]


@pytest.mark.parametrize("alg", ["ecc", "ecc384", "rsapss"])
def test_other_ak_algorithms_verify(swtpm: Swtpm, tmp_path: Path, alg: Any) -> None:
    provider = _provider(swtpm, tmp_path, ak_algorithm=alg, pcrs=(0, 7, PCR))
    nonce = os.urandom(20)
    item = provider.quote(nonce)
    claims = _verify(item, nonce, provider.ak_public())
    assert claims.ak_trust == "pinned"
    assert claims.quotes[0].signature_alg == ("rsapss" if alg == "rsapss" else "ecdsa")
    assert claims.quotes[0].hash_alg == ("sha384" if alg == "ecc384" else "sha256")
    assert sorted(claims.pcrs["sha256"]) == [0, 7, PCR]


def test_envelope_roundtrip_and_unpinned_ak(swtpm: Swtpm, tmp_path: Path) -> None:
    provider = _provider(swtpm, tmp_path)
    nonce = os.urandom(16)
    item = provider.quote(nonce)
    (back,) = parse_envelope(EvidenceBundle.single(item).to_json().encode()).items
    claims = _verify(back, nonce)
    assert claims.ak_trust == "none"  # the evidence carries its AK; nobody vouched for it
    # The same AK repeated as the envelope's "ak" attachment is the presenter's word: no pin.
    self_pinned = back.with_attachments({"ak": provider.ak_public()})
    assert _verify(self_pinned, nonce).ak_trust == "none"
    assert _verify(back, nonce, provider.ak_public()).ak_trust == "pinned"
    ctx = VerifyContext(now=datetime.now(UTC), nonce=nonce)
    result = verify_and_appraise(EvidenceBundle.single(back), _policy(bytes(32)), ctx)
    assert [r.field for r in result.failures()] == ["ak_trust"]


def test_quote_signed_by_a_second_tpm_ak_is_rejected(swtpm: Swtpm, tmp_path: Path) -> None:
    first = _provider(swtpm, tmp_path)
    second = Tpm2Provider(
        Tpm2Config(tcti=swtpm.tcti, state_dir=tmp_path / "second", ak_handle=0x81010010)
    )
    nonce = os.urandom(16)
    item = second.quote(nonce)
    forged = EvidenceItem(
        "tpm", item.data,
        {**item.attachments, "ak_pub": first.ak_public(), "ak": first.ak_public()},
    )  # fmt: skip
    with pytest.raises(AttestationError) as e:
        _verify(forged, nonce)
    assert e.value.code == "tpm-quote-signature-invalid"


def test_provider_rejects_oversized_nonce(swtpm: Swtpm, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        _provider(swtpm, tmp_path).quote(bytes(65))


def test_collect_binds_the_64_byte_sealroom_report_data(swtpm: Swtpm, tmp_path: Path) -> None:
    from sealroom.attestation.binding import ReportDataInputs, sealroom_report_data

    provider = _provider(swtpm, tmp_path)
    inputs = ReportDataInputs(manifest_hash=bytes(range(32)), keys_digest=bytes(32))
    nonce = os.urandom(16)
    report_data = sealroom_report_data(inputs, nonce)
    assert provider.kind == "tpm"
    item = provider.collect(report_data)
    ctx = VerifyContext(
        now=datetime.now(UTC),
        nonce=nonce,
        report_data_inputs=inputs,
        ak_pins=(provider.ak_public(),),
    )
    policy = Policy.from_dict(
        {"version": 1, "tpm": {"ak_trust": ["pinned"], "extra_data": {"mode": "sealroom-v1"}}}
    )
    verify_and_appraise(EvidenceBundle.single(item), policy, ctx).require_ok()
    with pytest.raises(InvalidInputError):
        provider.collect(bytes(32))
