"""Real hardware evidence in a federation token: authentic, but not made for the token.

A genuine AMD-signed SEV-SNP report (a public vector) presented as a site's token passes
the AMD chain and signature checks, then is refused because its REPORT_DATA is not the
token binding: captured evidence cannot be re-wrapped into a token for this federation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sealroom.attestation.policy import Policy
from sealroom.errors import AttestationError
from sealroom.federation.token import Binding, Freshness, make_token, new_token_id
from sealroom.federation.verify import Expectation, PeerVerifier

from ..attestation.snp.test_snp_vectors import VECS, load_vector

pytestmark = pytest.mark.vectors

KEY = "ab" * 32


def _token(vectors: Path, v: PeerVerifier, flip: bool = False) -> str:
    vec = VECS["milan_virtee"]
    item = load_vector(vectors, vec)
    if flip:
        data = bytearray(item.data)
        data[0x90] ^= 1  # inside MEASUREMENT, covered by the signature
        item = replace(item, data=bytes(data))
    now = int(vec.now.timestamp())
    binding = Binding(
        federation="fed",
        job="job-1",
        site="site-1",
        channel_key=KEY,
        freshness=Freshness.challenge(v.challenge()),
        token_id=new_token_id(),
        issued_at=now,
        expires_at=now + 60,
    )
    return make_token(binding, [item]).encode()


def _verifier() -> PeerVerifier:
    policy = Policy.from_dict(
        {"version": 1, "id": "real", "require": ["snp"], "snp": {"report_data": {"mode": "any"}}}
    )
    return PeerVerifier(policy, clock=lambda: VECS["milan_virtee"].now)


def test_real_report_not_made_for_the_token(vectors: Path) -> None:
    v = _verifier()
    with pytest.raises(AttestationError) as e:
        v.verify(_token(vectors, v), Expectation("fed", "job-1", "site-1", KEY))
    # authenticity passed (a bad signature or chain raises before the binding is looked at)
    assert e.value.code == "federation-binding-mismatch"


def test_real_report_with_a_flipped_byte_is_not_authentic(vectors: Path) -> None:
    v = _verifier()
    with pytest.raises(AttestationError) as e:
        v.verify(_token(vectors, v, flip=True), Expectation("fed", "job-1", "site-1", KEY))
    assert e.value.code == "snp-signature-invalid"
