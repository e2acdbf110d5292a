"""EAR tokens: real Veraison/Trustee vectors first, then round trips and negatives."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealroom.attestation.appraise import AppraisalResult, RuleResult, SubmodResult, Trust
from sealroom.attestation.claims import Claims
from sealroom.attestation.ear import (
    EAR_PROFILE,
    TRUSTEE_EAR_PROFILE,
    EarStatus,
    VerifierKey,
    ear_claims,
    issue_ear,
    jwk_thumbprint,
    load_jwks,
    parse_ear_claims,
    status_of,
    tier_of,
    trust_vector,
    verify_ear,
)
from sealroom.errors import AttestationError, InvalidInputError, MalformedEvidenceError

VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors" / "ear"
NOW = datetime(2026, 11, 21, 8, 0, 0, tzinfo=UTC)
TTL = timedelta(minutes=10)


def _vectors_dir() -> Path:
    if not VECTORS.is_dir():
        pytest.skip(f"EAR vectors not found at {VECTORS} (../shared/vectors/ear)")
    return VECTORS


def _tokens() -> dict[str, Any]:
    data = json.loads((_vectors_dir() / "veraison_ear_jwt_vectors.json").read_text())
    tokens: dict[str, Any] = data["tokens"]
    return tokens


def _veraison_jwks() -> dict[str, Any]:
    return load_jwks((_vectors_dir() / "veraison_test_pub.jwk.json").read_bytes())


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# ---------------------------------------------------------------- real vectors


@pytest.mark.vectors
@pytest.mark.parametrize("name", ["arc_testJWT", "arc_testJWT_JWK", "verify_pass_0"])
def test_veraison_valid_tokens_verify_with_test_key(name: str) -> None:
    t = _tokens()[name]
    # Veraison's test tokens carry no exp: accepted only when the caller says so.
    tok = verify_ear(t["token"], _veraison_jwks(), now=_at(t["iat"]), allow_missing_exp=True)
    assert tok.status is EarStatus.AFFIRMING
    assert tok.submods["test"].status is EarStatus.AFFIRMING
    assert tok.verifier_id.developer == "Acme Inc."
    assert tok.eat_profile == EAR_PROFILE
    assert tok.exp is None
    assert tok.key_thumbprint == jwk_thumbprint(_veraison_jwks()["keys"][0])


@pytest.mark.vectors
def test_veraison_token_trust_vector_is_read() -> None:
    t = _tokens()["arc_testJWT"]
    tok = verify_ear(t["token"], _veraison_jwks(), now=_at(t["iat"]), allow_missing_exp=True)
    sub = tok.submods["test"]
    assert sub.vector["executables"] == 3
    assert sub.vector["hardware"] == 2
    assert sub.policy_id == "https://veraison.example/policy/1/60a0068d"


@pytest.mark.vectors
def test_veraison_token_issued_after_now_is_not_yet_valid() -> None:
    t = _tokens()["arc_testJWT"]
    with pytest.raises(AttestationError) as ei:
        verify_ear(t["token"], _veraison_jwks(), now=_at(t["iat"] - 1), allow_missing_exp=True)
    assert ei.value.code == "ear-not-yet-valid"
    # ... unless the caller tolerates that much skew.
    verify_ear(
        t["token"],
        _veraison_jwks(),
        now=_at(t["iat"] - 1),
        leeway=timedelta(seconds=1),
        allow_missing_exp=True,
    )


@pytest.mark.vectors
@pytest.mark.parametrize("name", ["arc_testJWT", "arc_testJWT_JWK", "verify_pass_0"])
def test_ear_without_exp_refused(name: str) -> None:
    # Authentic, well-formed, but it never expires: a stolen or stale result would be good
    # forever. Refused unless the caller opts in (above).
    t = _tokens()[name]
    with pytest.raises(AttestationError) as ei:
        verify_ear(t["token"], _veraison_jwks(), now=_at(t["iat"]))
    assert ei.value.code == "ear-exp-missing"
    assert "exp is absent" in ei.value.message


@pytest.mark.vectors
def test_ear_wrong_profile_refused() -> None:
    # Trustee's token is authentic with its key, but its eat_profile is Trustee's, not EAR's.
    t, jwks, before_exp = _trustee_token()
    with pytest.raises(AttestationError) as ei:
        verify_ear(t["token"], jwks, now=before_exp)
    assert ei.value.code == "ear-profile-unknown"
    assert TRUSTEE_EAR_PROFILE in ei.value.message
    with pytest.raises(AttestationError) as ei:
        parse_ear_claims({**_claims_of(t["token"]), "eat_profile": "tag:example.com,2025:other"})
    assert ei.value.code == "ear-profile-unknown"


def _trustee_token() -> tuple[dict[str, Any], dict[str, Any], datetime]:
    """Trustee's real token, a JWKS holding its key, and a time before its exp."""
    t = _tokens()["arc_testRealmJWT"]
    jwks = load_jwks(json.dumps(t["header"]["jwk"]).encode())
    return t, jwks, datetime(2025, 7, 9, 11, 10, 0, tzinfo=UTC)


def _claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    obj: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {**obj, "eat_profile": EAR_PROFILE}


@pytest.mark.vectors
def test_trustee_token_key_only_in_header_is_rejected_without_caller_jwks() -> None:
    t = _tokens()["arc_testRealmJWT"]
    empty: dict[str, Any] = {"keys": []}
    for jwks in (empty, _veraison_jwks()):
        with pytest.raises(AttestationError) as ei:
            verify_ear(t["token"], jwks, now=_at(t["iat"]))
        assert ei.value.code == "ear-key-untrusted"
        assert "never trusted by itself" in ei.value.message


@pytest.mark.vectors
def test_trustee_token_verifies_when_caller_trusts_its_key() -> None:
    t, jwks, before_exp = _trustee_token()
    tok = verify_ear(t["token"], jwks, now=before_exp, profiles=(EAR_PROFILE, TRUSTEE_EAR_PROFILE))
    assert tok.eat_profile == "tag:github.com,2024:confidential-containers/Trustee"
    assert tok.exp == datetime(2025, 7, 9, 11, 10, 39, tzinfo=UTC)
    cpu0 = tok.submods["cpu0"]
    assert cpu0.status is EarStatus.AFFIRMING
    assert cpu0.vector == {"configuration": 3, "executables": 3, "hardware": 2}
    assert cpu0.policy_id == "default"


@pytest.mark.vectors
@pytest.mark.parametrize(
    "now",
    [
        datetime(2025, 7, 9, 11, 10, 39, tzinfo=UTC),  # exactly exp: RFC 7519 says reject
        datetime(2025, 7, 10, tzinfo=UTC),
        NOW,
    ],
)
def test_trustee_token_after_exp_is_expired(now: datetime) -> None:
    t = _tokens()["arc_testRealmJWT"]
    jwks = {"keys": [t["header"]["jwk"]]}
    with pytest.raises(AttestationError) as ei:
        verify_ear(t["token"], jwks, now=now, profiles=(TRUSTEE_EAR_PROFILE,))
    assert ei.value.code == "ear-expired"
    assert "2025-07-09T11:10:39" in ei.value.message


@pytest.mark.vectors
@pytest.mark.parametrize(
    ("name", "error", "code"),
    [
        ("verify_fail_0 (non-matching alg (HS256))", AttestationError, "ear-algorithm-not-allowed"),
        ('verify_fail_1 (alg "none")', AttestationError, "ear-algorithm-not-allowed"),
        ("verify_fail_2 (bad JWT formatting)", MalformedEvidenceError, "ear-malformed"),
        ("verify_fail_3 (empty attestation results)", AttestationError, "ear-claim-missing"),
        ("verify_fail_4 (JWT with trailing rubbish)", MalformedEvidenceError, "ear-malformed"),
    ],
)
def test_veraison_negative_tokens_are_rejected(
    name: str, error: type[Exception], code: str
) -> None:
    t = _tokens()[name]
    with pytest.raises(error) as ei:
        verify_ear(t["token"], _veraison_jwks(), now=_at(1666091373))
    assert isinstance(ei.value, AttestationError | MalformedEvidenceError)
    assert ei.value.code == code


@pytest.mark.vectors
def test_empty_claims_token_is_authentic_but_not_an_ear() -> None:
    # Its ES256 signature is genuine (the research check says so); the claims are what fail.
    t = _tokens()["verify_fail_3 (empty attestation results)"]
    with pytest.raises(AttestationError, match="eat_profile is absent"):
        verify_ear(t["token"], _veraison_jwks(), now=NOW)


@pytest.mark.vectors
@pytest.mark.parametrize("filename", ["veraison_ear_claims.json", "veraison_ear_claims_tv.json"])
def test_veraison_unsigned_claims_parse(filename: str) -> None:
    claims = json.loads((_vectors_dir() / filename).read_text())
    tok = parse_ear_claims(claims)
    assert tok.submods["test"].status is EarStatus.AFFIRMING
    assert tok.iat == _at(1666091373)
    assert tok.key_thumbprint is None


@pytest.mark.vectors
def test_trustee_example_claims_are_contraindicated_hardware_97() -> None:
    claims = json.loads((_vectors_dir() / "trustee_example_ear_claims.json").read_text())
    tok = parse_ear_claims(claims, profiles=(TRUSTEE_EAR_PROFILE,))
    cpu0 = tok.submods["cpu0"]
    assert cpu0.status is EarStatus.CONTRAINDICATED
    assert cpu0.vector["hardware"] == 97
    assert status_of(cpu0.vector) is EarStatus.CONTRAINDICATED
    assert tok.status is EarStatus.CONTRAINDICATED


# ---------------------------------------------------------------- AR4SI tiers


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        (0, EarStatus.NONE),
        (1, EarStatus.NONE),
        (-1, EarStatus.NONE),
        (2, EarStatus.AFFIRMING),
        (31, EarStatus.AFFIRMING),
        (-2, EarStatus.AFFIRMING),
        (-32, EarStatus.AFFIRMING),
        (32, EarStatus.WARNING),
        (95, EarStatus.WARNING),
        (-33, EarStatus.WARNING),
        (-96, EarStatus.WARNING),
        (96, EarStatus.CONTRAINDICATED),
        (99, EarStatus.CONTRAINDICATED),
        (127, EarStatus.CONTRAINDICATED),
        (-97, EarStatus.CONTRAINDICATED),
        (-128, EarStatus.CONTRAINDICATED),
    ],
)
def test_tier_of_follows_ar4si_bands(value: int, tier: EarStatus) -> None:
    assert tier_of(value) is tier


def test_status_of_all_zero_or_one_is_none() -> None:
    assert status_of({"hardware": 0, "configuration": 1}) is EarStatus.NONE
    assert status_of({}) is EarStatus.NONE
    assert status_of({"hardware": 2, "configuration": 0}) is EarStatus.AFFIRMING


# ---------------------------------------------------------------- issuing


@dataclass(frozen=True, kw_only=True)
class FakeClaims(Claims):
    measurement: bytes = bytes.fromhex("aa" * 8)


def _rule(field: str, passed: bool, trust: Trust, submod: str = "cpu0") -> RuleResult:
    return RuleResult(field, "got", "want", passed, trust, submod)


def _result(
    *,
    kind: str = "snp",
    simulated: bool = False,
    allow_simulated: bool = False,
    config_ok: bool = True,
    bundle_rules: tuple[RuleResult, ...] = (),
    name: str = "cpu0",
) -> AppraisalResult:
    claims = FakeClaims(kind=kind, simulated=simulated, verified=True)
    rules = (
        _rule("simulated", allow_simulated or not simulated, Trust.HARDWARE, name),
        _rule("MEASUREMENT", True, Trust.EXECUTABLES, name),
        _rule("POLICY.DEBUG", config_ok, Trust.CONFIGURATION, name),
    )
    return AppraisalResult("policy-1", (SubmodResult(name, claims, rules),), bundle_rules)


@pytest.fixture(scope="module")
def key() -> VerifierKey:
    return VerifierKey.generate()


@pytest.fixture(scope="module")
def other_key() -> VerifierKey:
    return VerifierKey.generate()


def _roundtrip(result: AppraisalResult, key: VerifierKey, **kw: Any) -> Any:
    token = issue_ear(result, key, now=NOW, ttl=TTL, **kw)
    return verify_ear(token, key.jwks(), now=NOW + timedelta(seconds=5))


def test_all_rules_pass_is_affirming(key: VerifierKey) -> None:
    tok = _roundtrip(_result(), key)
    cpu0 = tok.submods["cpu0"]
    assert cpu0.status is EarStatus.AFFIRMING
    assert cpu0.vector == {
        "instance-identity": 0,
        "configuration": 2,
        "executables": 2,
        "file-system": 0,
        "hardware": 2,
        "runtime-opaque": 2,  # verified SNP: encrypted memory
        "storage-opaque": 0,
        "sourced-data": 0,
    }
    assert cpu0.policy_id == "policy-1"
    sub = tok.claims["submods"]["cpu0"]
    assert sub["sealroom.kind"] == "snp"
    assert sub["sealroom.simulated"] is False
    assert sub["sealroom.claims"]["measurement"] == "aa" * 8
    assert sub["sealroom.failed-rules"] == []
    assert tok.verifier_id.developer == "sealroom"
    assert tok.verifier_id.build.startswith("sealroom ")
    assert tok.header["kid"] == key.kid
    assert tok.header["alg"] == "ES256"
    assert tok.iat == NOW
    assert tok.exp == NOW + TTL
    assert "bundle" not in tok.submods


def test_failed_configuration_rule_is_contraindicated(key: VerifierKey) -> None:
    tok = _roundtrip(_result(config_ok=False), key)
    cpu0 = tok.submods["cpu0"]
    assert cpu0.status is EarStatus.CONTRAINDICATED
    assert cpu0.vector["configuration"] == 96
    assert cpu0.vector["hardware"] == 2
    failed = tok.claims["submods"]["cpu0"]["sealroom.failed-rules"]
    assert [r["field"] for r in failed] == ["POLICY.DEBUG"]
    assert failed[0]["pass"] is False


def test_simulated_and_allowed_is_warning_never_affirming(key: VerifierKey) -> None:
    tok = _roundtrip(_result(kind="sim", simulated=True, allow_simulated=True), key)
    cpu0 = tok.submods["cpu0"]
    assert cpu0.status is EarStatus.WARNING
    assert cpu0.vector["hardware"] == 32
    assert cpu0.vector["runtime-opaque"] == 0
    assert tok.claims["submods"]["cpu0"]["sealroom.simulated"] is True
    assert tok.simulated("cpu0")


def test_simulated_snp_layout_makes_no_encrypted_memory_claim(key: VerifierKey) -> None:
    tok = _roundtrip(_result(kind="snp", simulated=True, allow_simulated=True), key)
    assert tok.submods["cpu0"].vector["runtime-opaque"] == 0
    assert tok.submods["cpu0"].vector["hardware"] == 32


def test_simulated_and_forbidden_is_contraindicated_hardware_97(key: VerifierKey) -> None:
    tok = _roundtrip(_result(kind="sim", simulated=True, allow_simulated=False), key)
    assert tok.submods["cpu0"].status is EarStatus.CONTRAINDICATED
    assert tok.submods["cpu0"].vector["hardware"] == 97


def test_tpm_evidence_makes_no_runtime_opaque_claim(key: VerifierKey) -> None:
    tok = _roundtrip(_result(kind="tpm"), key)
    assert tok.submods["cpu0"].vector["runtime-opaque"] == 0
    assert tok.submods["cpu0"].status is EarStatus.AFFIRMING


def test_failed_runtime_opaque_rule_is_contraindicated() -> None:
    rules = [_rule("SME", False, Trust.RUNTIME_OPAQUE)]
    vec = trust_vector(rules, kind="snp", simulated=False, verified=True)
    assert vec["runtime-opaque"] == 96


def test_bundle_rules_get_their_own_submodule(key: VerifierKey) -> None:
    req = RuleResult(
        "require.nvidia", "[snp]", "a nvidia evidence item", False, Trust.INSTANCE_IDENTITY
    )
    tok = _roundtrip(_result(bundle_rules=(req,)), key)
    assert tok.submods["cpu0"].status is EarStatus.AFFIRMING
    bundle = tok.submods["bundle"]
    assert bundle.status is EarStatus.CONTRAINDICATED
    assert bundle.vector["instance-identity"] == 96
    assert tok.claims["submods"]["bundle"]["sealroom.failed-rules"][0]["field"] == "require.nvidia"
    assert tok.status is EarStatus.CONTRAINDICATED


def test_submodule_named_bundle_collides_with_bundle_rules(key: VerifierKey) -> None:
    req = RuleResult("require.snp", "[snp]", "a snp evidence item", True, Trust.INSTANCE_IDENTITY)
    with pytest.raises(InvalidInputError) as ei:
        issue_ear(_result(name="bundle", bundle_rules=(req,)), key, now=NOW, ttl=TTL)
    assert ei.value.code == "ear-submod-name-reserved"


def test_unverified_claims_cannot_be_issued(key: VerifierKey) -> None:
    claims = FakeClaims(kind="snp", simulated=False, verified=False)
    result = AppraisalResult("p", (SubmodResult("cpu0", claims, ()),))
    with pytest.raises(ValueError, match="verified"):
        issue_ear(result, key, now=NOW, ttl=TTL)


def test_naive_now_is_refused(key: VerifierKey) -> None:
    with pytest.raises(ValueError, match="timezone"):
        issue_ear(_result(), key, now=datetime(2026, 1, 1), ttl=TTL)
    token = issue_ear(_result(), key, now=NOW, ttl=TTL)
    with pytest.raises(ValueError, match="timezone"):
        verify_ear(token, key.jwks(), now=datetime(2026, 1, 1))


# ---------------------------------------------------------------- nonce and time


def test_nonce_round_trip(key: VerifierKey) -> None:
    nonce = bytes(range(32))
    token = issue_ear(_result(), key, now=NOW, ttl=TTL, nonce=nonce)
    tok = verify_ear(token, key.jwks(), now=NOW, expected_nonce=nonce)
    assert tok.nonce == nonce
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["eat_nonce"] == base64.urlsafe_b64encode(nonce).rstrip(b"=").decode()


def test_wrong_nonce_is_rejected(key: VerifierKey) -> None:
    token = issue_ear(_result(), key, now=NOW, ttl=TTL, nonce=b"\x01" * 32)
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW, expected_nonce=b"\x02" * 32)
    assert ei.value.code == "ear-nonce-mismatch"
    assert "02" * 32 in ei.value.message


def test_missing_nonce_is_rejected_when_one_is_expected(key: VerifierKey) -> None:
    token = issue_ear(_result(), key, now=NOW, ttl=TTL)
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW, expected_nonce=b"\x02" * 32)
    assert ei.value.code == "ear-nonce-mismatch"


def test_nonce_outside_ear_bounds_is_refused(key: VerifierKey) -> None:
    with pytest.raises(InvalidInputError):
        issue_ear(_result(), key, now=NOW, ttl=TTL, nonce=b"short")


def test_expiry_uses_callers_now_and_explicit_leeway(key: VerifierKey) -> None:
    token = issue_ear(_result(), key, now=NOW, ttl=TTL)
    verify_ear(token, key.jwks(), now=NOW + TTL - timedelta(seconds=1))
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW + TTL)
    assert ei.value.code == "ear-expired"
    verify_ear(
        token, key.jwks(), now=NOW + TTL + timedelta(seconds=5), leeway=timedelta(seconds=10)
    )


def test_issued_in_the_future_is_rejected(key: VerifierKey) -> None:
    token = issue_ear(_result(), key, now=NOW, ttl=TTL)
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW - timedelta(seconds=30))
    assert ei.value.code == "ear-not-yet-valid"


# ---------------------------------------------------------------- authenticity


def test_token_signed_by_another_key_is_rejected(key: VerifierKey, other_key: VerifierKey) -> None:
    token = issue_ear(_result(), other_key, now=NOW, ttl=TTL)
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW)
    assert ei.value.code == "ear-key-unknown"


def test_forged_kid_of_trusted_key_is_signature_invalid(
    key: VerifierKey, other_key: VerifierKey
) -> None:
    claims = ear_claims(_result(), now=NOW, ttl=TTL)
    token = jwt.encode(claims, other_key.private_key, algorithm="ES256", headers={"kid": key.kid})
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW)
    assert ei.value.code == "ear-signature-invalid"


def test_token_without_kid_tries_every_trusted_key(
    key: VerifierKey, other_key: VerifierKey
) -> None:
    claims = ear_claims(_result(), now=NOW, ttl=TTL)
    token = jwt.encode(claims, key.private_key, algorithm="ES256")
    jwks = {"keys": other_key.jwks()["keys"] + key.jwks()["keys"]}
    assert verify_ear(token, jwks, now=NOW).key_thumbprint == key.kid
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, other_key.jwks(), now=NOW)
    assert ei.value.code == "ear-signature-invalid"


def test_attacker_key_in_header_jwk_is_not_trusted(
    key: VerifierKey, other_key: VerifierKey
) -> None:
    claims = ear_claims(_result(), now=NOW, ttl=TTL)
    attacker_jwk = {
        k: v for k, v in other_key.public_jwk().items() if k in ("kty", "crv", "x", "y")
    }
    token = jwt.encode(
        claims, other_key.private_key, algorithm="ES256", headers={"jwk": attacker_jwk}
    )
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW)
    assert ei.value.code == "ear-key-untrusted"
    # The same token verifies once the caller itself trusts that key.
    verify_ear(token, other_key.jwks(), now=NOW)


def test_tampered_payload_byte_is_signature_invalid(key: VerifierKey) -> None:
    token = issue_ear(_result(config_ok=False), key, now=NOW, ttl=TTL)
    header, payload, sig = token.split(".")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert raw.count(b'"configuration":96') == 1
    forged = raw.replace(b'"configuration":96', b'"configuration":26')  # one byte
    forged = forged.replace(b'"ear.status":"contraindicated"', b'"ear.status":"affirming"')
    seg = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    with pytest.raises(AttestationError) as ei:
        verify_ear(f"{header}.{seg}.{sig}", key.jwks(), now=NOW)
    assert ei.value.code == "ear-signature-invalid"


def test_tampered_signature_byte_is_signature_invalid(key: VerifierKey) -> None:
    token = issue_ear(_result(), key, now=NOW, ttl=TTL)
    header, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 0x01
    seg = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(AttestationError) as ei:
        verify_ear(f"{header}.{payload}.{seg}", key.jwks(), now=NOW)
    assert ei.value.code == "ear-signature-invalid"


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_hs256_with_public_key_pem_as_secret_is_rejected(key: VerifierKey) -> None:
    # The classic key-confusion attack: an HMAC "signed" with the verifier's public key.
    pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": key.kid})
    signing_input = f"{header}.{_b64(ear_claims(_result(), now=NOW, ttl=TTL))}"
    mac = hmac.HMAC(pem, hashes.SHA256())
    mac.update(signing_input.encode())
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac.finalize()).rstrip(b'=').decode()}"
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW)
    assert ei.value.code == "ear-algorithm-not-allowed"


def test_alg_none_with_valid_claims_is_rejected(key: VerifierKey) -> None:
    token = f"{_b64({'alg': 'none'})}.{_b64(ear_claims(_result(), now=NOW, ttl=TTL))}."
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW)
    assert ei.value.code == "ear-algorithm-not-allowed"


@pytest.mark.parametrize("alg", ["ES384", "RS256", "EdDSA", "es256", None])
def test_other_algorithms_are_rejected(key: VerifierKey, alg: str | None) -> None:
    token = issue_ear(_result(), key, now=NOW, ttl=TTL)
    _, payload, sig = token.split(".")
    with pytest.raises(AttestationError) as ei:
        verify_ear(f"{_b64({'alg': alg})}.{payload}.{sig}", key.jwks(), now=NOW)
    assert ei.value.code == "ear-algorithm-not-allowed"


def test_crit_header_is_rejected(key: VerifierKey) -> None:
    claims = ear_claims(_result(), now=NOW, ttl=TTL)
    token = jwt.encode(
        claims, key.private_key, algorithm="ES256", headers={"crit": ["exp"], "kid": key.kid}
    )
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW)
    assert ei.value.code == "ear-header-unsupported"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        ".e30.",
        "e30..",
        "e30.e30.c2ln!",
        "e30.e30.a",  # length 1 mod 4 is never base64
        "W10.e30.",  # header is a JSON array
        "bnVsbA.e30.",  # header is null
        "eyJhbGciOiJFUzI1NiIsImFsZyI6Im5vbmUifQ.e30.",  # duplicate "alg" member
        "eyJhbGciOiJFUzI1NiJ9.W10.AAAA",  # payload is an array
        "eyJhbGciOiJFUzI1NiJ9.eyJhIjpOYU59.AAAA",  # NaN is not JSON
        "eyJhbGciOiJFUzI1NiJ9.__8.AAAA",  # payload is not UTF-8
    ],
)
def test_syntax_errors_are_malformed(key: VerifierKey, token: str) -> None:
    with pytest.raises(MalformedEvidenceError):
        verify_ear(token, key.jwks(), now=NOW)


def test_bytes_token_is_accepted(key: VerifierKey) -> None:
    token = issue_ear(_result(), key, now=NOW, ttl=TTL)
    assert verify_ear(token.encode(), key.jwks(), now=NOW).status is EarStatus.AFFIRMING
    with pytest.raises(MalformedEvidenceError):
        verify_ear(token.encode() + b"\xff", key.jwks(), now=NOW)


def test_wrong_length_signature_is_signature_invalid(key: VerifierKey) -> None:
    token = issue_ear(_result(), key, now=NOW, ttl=TTL)
    header, payload, _ = token.split(".")
    with pytest.raises(AttestationError) as ei:
        verify_ear(f"{header}.{payload}.AAAA", key.jwks(), now=NOW)
    assert ei.value.code == "ear-signature-invalid"


# ---------------------------------------------------------------- claims validation


def _valid_claims() -> dict[str, Any]:
    return {
        "eat_profile": EAR_PROFILE,
        "iat": 1_700_000_000,
        "ear.verifier-id": {"developer": "sealroom", "build": "sealroom test"},
        "submods": {
            "cpu0": {
                "ear.status": "affirming",
                "ear.trustworthiness-vector": {"hardware": 2},
                "ear.appraisal-policy-id": "p",
            }
        },
    }


def _without(path: str) -> dict[str, Any]:
    c = _valid_claims()
    *parents, last = path.split("/")
    d: Any = c
    for p in parents:
        d = d[p]
    del d[last]
    return c


def _with(path: str, value: Any) -> dict[str, Any]:
    c = _valid_claims()
    *parents, last = path.split("/")
    d: Any = c
    for p in parents:
        d = d[p]
    d[last] = value
    return c


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        pytest.param(_without("eat_profile"), "ear-claim-missing", id="missing_eat_profile"),
        pytest.param(_without("iat"), "ear-claim-missing", id="missing_iat"),
        pytest.param(_without("ear.verifier-id"), "ear-claim-missing", id="missing_verifier_id"),
        pytest.param(_without("submods"), "ear-claim-missing", id="missing_submods"),
        pytest.param(_with("eat_profile", 7), "ear-claims-invalid", id="profile_not_string"),
        pytest.param(_with("iat", 1.7e9), "ear-claims-invalid", id="float_iat"),
        pytest.param(_with("iat", True), "ear-claims-invalid", id="bool_iat"),
        pytest.param(_with("iat", -5), "ear-claims-invalid", id="negative_iat"),
        pytest.param(_with("iat", 10**20), "ear-claims-invalid", id="iat_beyond_year_9999"),
        pytest.param(_with("exp", "tomorrow"), "ear-claims-invalid", id="string_exp"),
        pytest.param(
            _with("ear.verifier-id", "sealroom"), "ear-claims-invalid", id="verifier_id_not_object"
        ),
        pytest.param(
            _without("ear.verifier-id/build"), "ear-claims-invalid", id="verifier_id_without_build"
        ),
        pytest.param(_with("submods", {}), "ear-claims-invalid", id="empty_submods"),
        pytest.param(_with("submods", []), "ear-claims-invalid", id="submods_array"),
        pytest.param(
            _with("submods/cpu0", "affirming"), "ear-claims-invalid", id="submod_not_object"
        ),
        pytest.param(
            _without("submods/cpu0/ear.status"), "ear-status-invalid", id="submod_without_status"
        ),
        pytest.param(
            _with("submods/cpu0/ear.status", "good"),
            "ear-status-invalid",
            id="submod_status_unknown",
        ),
        pytest.param(
            _with("submods/cpu0/ear.status", 2), "ear-status-invalid", id="submod_status_integer"
        ),
        pytest.param(
            _with("submods/cpu0/ear.trustworthiness-vector", {"hardware": 300}),
            "ear-claims-invalid",
            id="vector_value_out_of_range",
        ),
        pytest.param(
            _with("submods/cpu0/ear.trustworthiness-vector", {"hardware": "2"}),
            "ear-claims-invalid",
            id="vector_value_string",
        ),
        pytest.param(
            _with("submods/cpu0/ear.trustworthiness-vector", {"hardware": 97}),
            "ear-status-inconsistent",
            id="affirming_status_over_contraindicated_vector",
        ),
        pytest.param(
            _with("submods/cpu0/ear.appraisal-policy-id", ["p"]),
            "ear-claims-invalid",
            id="policy_id_not_string",
        ),
        pytest.param(_with("eat_nonce", "!!!"), "ear-claims-invalid", id="nonce_not_base64url"),
        pytest.param(_with("eat_nonce", []), "ear-claims-invalid", id="nonce_empty_array"),
    ],
)
def test_claims_defects_are_attestation_errors(claims: dict[str, Any], code: str) -> None:
    with pytest.raises(AttestationError) as ei:
        parse_ear_claims(claims)
    assert ei.value.code == code


def test_claims_defects_are_caught_in_signed_tokens_too(key: VerifierKey) -> None:
    claims = _with("submods/cpu0/ear.trustworthiness-vector", {"hardware": 97})
    token = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, key.jwks(), now=NOW)
    assert ei.value.code == "ear-status-inconsistent"


def test_claims_not_an_object_is_malformed() -> None:
    with pytest.raises(MalformedEvidenceError):
        parse_ear_claims([])  # type: ignore[arg-type]


def test_warning_status_over_affirming_vector_is_allowed() -> None:
    # "No higher trust than the worst claim": a more cautious status is fine.
    tok = parse_ear_claims(_with("submods/cpu0/ear.status", "warning"))
    assert tok.submods["cpu0"].status is EarStatus.WARNING


def test_nonce_array_matches_any() -> None:
    n1, n2 = b"\x01" * 16, b"\x02" * 16
    enc = [base64.urlsafe_b64encode(n).rstrip(b"=").decode() for n in (n1, n2)]
    tok = parse_ear_claims(_with("eat_nonce", enc))
    assert tok.nonces == (n1, n2)


# ---------------------------------------------------------------- keys and JWKS


def test_kid_is_rfc7638_thumbprint(key: VerifierKey) -> None:
    jwk = key.public_jwk()
    required = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode()
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    assert key.kid == expected == jwk["kid"]
    assert jwk_thumbprint(jwk) == expected  # alg/use/kid members do not change it
    assert jwk["alg"] == "ES256"
    assert jwk["use"] == "sig"
    assert key.jwks() == {"keys": [jwk]}
    assert "d" not in jwk


def test_save_writes_mode_0600_atomically(tmp_path: Path, key: VerifierKey) -> None:
    path = tmp_path / "ear.pem"
    old = os.umask(0)
    try:
        key.save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert VerifierKey.load(path).kid == key.kid
    assert [p.name for p in tmp_path.iterdir()] == ["ear.pem"]  # no temp file left behind


def test_save_without_overwrite_keeps_existing_key(tmp_path: Path, key: VerifierKey) -> None:
    path = tmp_path / "ear.pem"
    key.save(path)
    with pytest.raises(FileExistsError):
        VerifierKey.generate().save(path, overwrite=False)
    assert VerifierKey.load(path).kid == key.kid


def test_load_or_create_creates_once(tmp_path: Path) -> None:
    path = tmp_path / "home" / "verifier" / "ear.pem"  # folders created on first use
    first = VerifierKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert VerifierKey.load_or_create(path).kid == first.kid


def test_load_rejects_missing_garbage_and_wrong_key_types(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as ei:
        VerifierKey.load(tmp_path / "absent.pem")
    assert ei.value.code == "key-unreadable"
    (tmp_path / "junk.pem").write_bytes(b"not a key")
    with pytest.raises(InvalidInputError) as ei:
        VerifierKey.load(tmp_path / "junk.pem")
    assert ei.value.code == "key-invalid"
    for name, k in (
        ("rsa.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("p384.pem", ec.generate_private_key(ec.SECP384R1())),
    ):
        (tmp_path / name).write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        with pytest.raises(InvalidInputError) as ei:
            VerifierKey.load(tmp_path / name)
        assert ei.value.code == "key-invalid"


def test_repr_does_not_show_private_key(key: VerifierKey) -> None:
    assert repr(key) == f"VerifierKey(kid={key.kid!r})"


def test_load_jwks_accepts_jwks_and_single_jwk(key: VerifierKey) -> None:
    assert load_jwks(json.dumps(key.jwks()).encode()) == key.jwks()
    assert load_jwks(json.dumps(key.public_jwk()).encode()) == {"keys": [key.public_jwk()]}


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"foo": 1}',
        b'{"keys": {}}',
        b'{"keys": [1]}',
        # A point that is not on P-256.
        json.dumps({"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}).encode(),
        json.dumps({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}).encode(),
    ],
)
def test_load_jwks_rejects_bad_input(data: bytes) -> None:
    with pytest.raises(InvalidInputError):
        load_jwks(data)


def test_load_jwks_rejects_private_key_material(key: VerifierKey) -> None:
    jwk = dict(key.public_jwk())
    jwk["d"] = "AAAA"
    with pytest.raises(InvalidInputError, match="private"):
        load_jwks(json.dumps(jwk).encode())


def test_jwks_keys_for_other_uses_are_ignored(key: VerifierKey) -> None:
    token = issue_ear(_result(), key, now=NOW, ttl=TTL)
    enc_only = {"keys": [{**key.public_jwk(), "use": "enc"}]}
    with pytest.raises(AttestationError) as ei:
        verify_ear(token, enc_only, now=NOW)
    assert ei.value.code == "ear-key-unknown"


# ---------------------------------------------------------------- properties


_ALLOWED = (MalformedEvidenceError, AttestationError)
_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_PROPS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_PROPS
@given(st.text(max_size=300))
def test_random_text_only_raises_typed_errors(text: str) -> None:
    with contextlib.suppress(*_ALLOWED):
        verify_ear(text, _FIXED_KEY.jwks(), now=NOW)


@_PROPS
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_typed_errors(data: bytes) -> None:
    with contextlib.suppress(*_ALLOWED):
        verify_ear(data, _FIXED_KEY.jwks(), now=NOW)


@_PROPS
@given(st.lists(st.text(alphabet=_B64URL_ALPHABET, max_size=120), min_size=3, max_size=3))
def test_random_base64url_segments_only_raise_typed_errors(parts: list[str]) -> None:
    with contextlib.suppress(*_ALLOWED):
        verify_ear(".".join(parts), _FIXED_KEY.jwks(), now=NOW)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_claim_keys = st.sampled_from(
    ["eat_profile", "iat", "exp", "nbf", "eat_nonce", "ear.verifier-id", "submods", "x"]
)


@_PROPS
@given(
    st.dictionaries(_claim_keys, _json, max_size=8),
    st.dictionaries(st.sampled_from(["kid", "jwk", "typ", "crit", "b64", "x"]), _json, max_size=3),
)
def test_signed_random_claims_only_raise_typed_errors(
    claims: dict[str, Any], extra_header: dict[str, Any]
) -> None:
    base = _valid_claims()
    base.update(claims)
    header = {k: v for k, v in extra_header.items() if k not in ("alg",)}
    try:
        token = jwt.encode(base, _FIXED_KEY.private_key, algorithm="ES256", headers=header)
    except (TypeError, ValueError, jwt.PyJWTError):
        return  # pyjwt refuses to build it; nothing to verify
    with contextlib.suppress(*_ALLOWED):
        verify_ear(token, _FIXED_KEY.jwks(), now=NOW)


_FIXED_KEY = VerifierKey.generate()


def test_jwks_parse_cache_never_trusts_a_key_no_longer_in_the_jwks(
    key: VerifierKey, other_key: VerifierKey
) -> None:
    """The parsed JWKS is cached by its content: after a caller's JWKS changes (even the
    same dict changed in place) a token of the key it dropped is refused at once."""
    token = issue_ear(_result(), key, now=NOW, ttl=TTL)
    jwks: dict[str, Any] = key.jwks()
    assert verify_ear(token, jwks, now=NOW).key_thumbprint == key.kid  # now cached
    jwks["keys"] = other_key.jwks()["keys"]  # rotated in place
    with pytest.raises(AttestationError) as e:
        verify_ear(token, jwks, now=NOW)
    assert e.value.code == "ear-key-unknown"
    jwks["keys"][0]["kid"] = key.kid  # the other key under the old kid: signature fails
    with pytest.raises(AttestationError) as e:
        verify_ear(token, jwks, now=NOW)
    assert e.value.code == "ear-signature-invalid"
    assert verify_ear(token, key.jwks(), now=NOW).key_thumbprint == key.kid


def test_verifier_key_kid_and_jwk_are_its_own(key: VerifierKey, other_key: VerifierKey) -> None:
    """kid and JWK members are computed once per key object, never shared between keys."""
    assert key.kid == jwk_thumbprint(key.public_jwk()) != other_key.kid
    assert key.public_jwk() is not key.public_jwk()  # callers get their own dict
    jwk = key.public_jwk()
    jwk["x"] = "tampered"
    assert key.public_jwk()["x"] != "tampered"
