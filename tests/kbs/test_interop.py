"""Interoperability: JWE responses decrypt with jwcrypto, joserfc and the guest-components
procedure; binding digests match a second RFC 8785 implementation and Trustee's known
answer; the protected header is byte-identical to what the guest re-serializes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jcs
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe as rfc_jwe
from joserfc.jwk import ECKey, RSAKey
from jwcrypto import jwe as jc_jwe
from jwcrypto import jwk as jc_jwk

from sealroom.kbs import jwe
from sealroom.kbs.jwe import JweFailure, TeeKeyPair, decrypt_like_guest, encrypt, guest_aad
from sealroom.kbs.protocol import (
    JweResponse,
    TeePubKey,
    b64url_decode,
    regularize,
    runtime_data_digest,
    runtime_data_json,
)

ALGS = ["ECDH-ES+A256KW-P256", "ECDH-ES+A256KW-P521", "RSA-OAEP-256"]


def _pem(kp: TeeKeyPair) -> bytes:
    return kp.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module", params=ALGS)
def keypair(request: pytest.FixtureRequest) -> TeeKeyPair:
    return TeeKeyPair.generate(str(request.param))


def test_jwcrypto_decrypts(keypair: TeeKeyPair) -> None:
    r = encrypt(keypair.public(), b"payload \x00\xff")
    tok = jc_jwe.JWE()
    tok.deserialize(r.model_dump_json(exclude_none=True), key=jc_jwk.JWK.from_pem(_pem(keypair)))
    assert tok.payload == b"payload \x00\xff"


def test_joserfc_decrypts(keypair: TeeKeyPair) -> None:
    r = encrypt(keypair.public(), b"payload")
    rsa = keypair.public().kty == "RSA"
    key = (RSAKey if rsa else ECKey).import_key(_pem(keypair))
    registry = rfc_jwe.JWERegistry(algorithms=["RSA-OAEP-256", "ECDH-ES+A256KW", "A256GCM"])
    flat: Any = r.model_dump(exclude_none=True)
    out = rfc_jwe.decrypt_json(flat, key, registry=registry)
    assert out.plaintext == b"payload"


def test_guest_procedure_decrypts(keypair: TeeKeyPair) -> None:
    assert decrypt_like_guest(keypair, encrypt(keypair.public(), b"x" * 1000)) == b"x" * 1000


def test_protected_header_is_what_the_guest_reserializes(keypair: TeeKeyPair) -> None:
    """kbs-types rebuilds the AAD by serializing the parsed header; ours must be those
    very bytes, or the guest's GCM tag check fails while generic JOSE libraries pass."""
    r = encrypt(keypair.public(), b"p")
    header = json.loads(b64url_decode(r.protected))
    assert guest_aad(header) == r.protected.encode()
    assert r.aad is None and "aad" not in r.model_dump(exclude_none=True)
    if keypair.public().kty == "EC":
        assert list(header) == ["alg", "enc", "epk"]
        assert list(header["epk"]) == ["crv", "kty", "x", "y"]


def test_guest_aad_sorts_flattened_members_like_serde() -> None:
    header = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "zz": 1, "epk": {"y": "b", "x": "a"}}
    want = '{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"x":"a","y":"b"},"zz":1}'
    assert b64url_decode(guest_aad(header).decode()) == want.encode()


def test_tampered_response_refused_by_guest(keypair: TeeKeyPair) -> None:
    r = encrypt(keypair.public(), b"payload")
    flipped = r.model_copy(update={"tag": r.tag[:-2] + ("AA" if r.tag[-2:] != "AA" else "BA")})
    with pytest.raises(JweFailure):
        decrypt_like_guest(keypair, flipped)


def test_response_for_another_key_refused_by_guest() -> None:
    a, b = TeeKeyPair.generate(), TeeKeyPair.generate()
    with pytest.raises(JweFailure):
        decrypt_like_guest(b, encrypt(a.public(), b"p"))
    p521 = TeeKeyPair.generate("ECDH-ES+A256KW-P521")
    with pytest.raises(JweFailure, match="Unmatched curve"):
        decrypt_like_guest(p521, encrypt(a.public(), b"p"))


@pytest.mark.parametrize(
    ("key", "match"),
    [
        (TeePubKey(kty="EC", crv="P-384", alg="ECDH-ES+A256KW", x="AA", y="AA"), "not supported"),
        (TeePubKey(kty="EC", crv="P-256", alg="ECDH-ES", x="AA", y="AA"), "not supported"),
        (TeePubKey(kty="RSA", alg="RSA1_5", n="AQAB", e="AQAB"), "not supported"),
        (TeePubKey(kty="EC", crv="P-256", alg="ECDH-ES+A256KW", x="AA", y="AA"), "length"),
    ],
)
def test_unsupported_or_malformed_tee_keys_refused(key: TeePubKey, match: str) -> None:
    with pytest.raises(JweFailure, match=match):
        jwe.check_supported(key)


def test_point_not_on_curve_refused() -> None:
    pub = TeeKeyPair.generate().public()
    bad = pub.model_copy(update={"y": pub.x})
    with pytest.raises(JweFailure, match="invalid TEE public key"):
        encrypt(bad, b"p")


# ------------------------------------------------------------------ binding digest


def test_trustee_known_answer() -> None:
    """attestation-service/src/lib.rs test table: SHA-384 of the canonical JSON of
    {"b": 1, "a": "test", "c": {"d": "e"}}."""
    import rfc8785

    doc: Any = {"b": 1, "a": "test", "c": {"d": "e"}}
    want = (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd2"
        "2c4597480a186427c813ca941da78870c3"
    )
    assert hashlib.sha384(rfc8785.dumps(doc)).hexdigest() == want
    assert hashlib.sha384(jcs.canonicalize(doc)).hexdigest() == want


def test_runtime_data_digest_known_answer_by_hand() -> None:
    """Canonical JSON written out by hand: members sorted by UTF-16 code units, no spaces."""
    key = TeePubKey(kty="EC", crv="P-256", alg="ECDH-ES+A256KW", x="eA", y="eQ")
    canonical = (
        '{"additional-evidence":"","nonce":"bm9uY2U=","tee-pubkey":'
        '{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"eA","y":"eQ"}}'
    )
    want = hashlib.sha384(canonical.encode()).digest()
    assert runtime_data_digest("bm9uY2U=", key) == want
    assert regularize(want) == want + bytes(16)
    assert regularize(want * 2) == (want * 2)[:64]


def test_extra_jwk_members_are_not_bound() -> None:
    """Trustee deserializes tee-pubkey into its typed form, dropping members like kid."""
    pub = TeeKeyPair.generate().public()
    with_kid = TeePubKey.model_validate({**pub.members(), "kid": "x", "use": "enc"})
    assert runtime_data_digest("n", with_kid) == runtime_data_digest("n", pub)


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


@settings(max_examples=200, deadline=None)
@given(nonce=_text, extra=_text, alg=st.sampled_from(["sha256", "sha384", "sha512"]))
def test_digest_matches_second_jcs_implementation(nonce: str, extra: str, alg: str) -> None:
    pub = TeePubKey(kty="RSA", alg="RSA-OAEP-256", n="AQAB", e="AQAB")
    doc = runtime_data_json(nonce, pub, extra)
    want = hashlib.new(alg, jcs.canonicalize(doc)).digest()
    assert runtime_data_digest(nonce, pub, extra, alg) == want


def test_response_model_round_trips_trustee_member_names() -> None:
    r = encrypt(TeeKeyPair.generate().public(), b"p")
    assert set(r.model_dump(exclude_none=True)) == {
        "protected",
        "encrypted_key",
        "iv",
        "ciphertext",
        "tag",
    }
    assert JweResponse.model_validate_json(r.model_dump_json()) == r
