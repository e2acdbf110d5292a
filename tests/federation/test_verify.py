"""Federation tokens: every refusal its own error, each named after the defect it stops."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealroom.attestation.ear import VerifierKey, issue_ear
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.errors import AttestationError, MalformedEvidenceError, PolicyViolationError
from sealroom.federation.errors import (
    PeerPolicyError,
    StaleFreshnessError,
    TokenExpiredError,
    TokenReplayError,
    WrongChannelKeyError,
    WrongJobError,
    WrongSiteError,
)
from sealroom.federation.site import TokenIssuer
from sealroom.federation.token import FederationToken, Freshness, channel_key_digest
from sealroom.federation.verify import Expectation, PeerVerifier

GOOD = hashlib.sha384(b"agreed runtime").digest()
BAD = hashlib.sha384(b"modified runtime").digest()
T0 = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class SimTee:
    """A site's TEE: the host fixed MEASUREMENT; the site picks REPORT_DATA only."""

    kind = "snp"

    def __init__(self, authority: SimAuthority, measurement: bytes, clock: Clock) -> None:
        self.authority, self.measurement, self.clock = authority, measurement, clock

    def collect(self, report_data: bytes) -> EvidenceItem:
        report = self.authority.report(measurement=self.measurement, report_data=report_data)
        return self.authority.evidence(report, collected_at=self.clock())


def _policy() -> Policy:
    return Policy.from_dict(
        {
            "version": 1,
            "id": "peer-policy",
            "allow_simulated": True,
            "require": ["snp"],
            "snp": {"measurements": [GOOD.hex()], "report_data": {"mode": "any"}},
        }
    )


def _key() -> str:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    return channel_key_digest(
        pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.fixture(scope="module")
def authority() -> SimAuthority:
    # one sim authority for the module: issuing its RSA chain takes seconds
    return SimAuthority.ephemeral(T0 - timedelta(days=1))


@pytest.fixture
def world(authority: SimAuthority) -> tuple[SimAuthority, Clock]:
    return authority, Clock()


def _site(
    world: tuple[SimAuthority, Clock],
    name: str = "site-1",
    measurement: bytes = GOOD,
    key: str | None = None,
    certificate: str | None = None,
) -> TokenIssuer:
    auth, clock = world
    return TokenIssuer(
        federation="fed",
        site=name,
        channel_key=key or _key(),
        providers=[SimTee(auth, measurement, clock)],
        lifetime=120,
        certificate=certificate,
        clock=clock,
    )


def _verifier(world: tuple[SimAuthority, Clock], **kw: object) -> PeerVerifier:
    auth, clock = world
    return PeerVerifier(_policy(), extra_roots=(auth.root,), clock=clock, **kw)  # type: ignore[arg-type]


def test_fresh_token_with_good_measurement_is_accepted(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world)
    token = site.answer("job-1", v.challenge())
    verdict = v.verify(token, Expectation("fed", "job-1", "site-1", site.channel_key))
    assert verdict.site == "site-1" and verdict.simulated and verdict.result.ok


def test_replayed_token(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world)
    token = site.answer("job-1", v.challenge())
    expect = Expectation("fed", "job-1", "site-1", site.channel_key)
    v.verify(token, expect)
    with pytest.raises(TokenReplayError):
        v.verify(token, expect)


def test_challenge_answered_twice(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world)
    nonce = v.challenge()
    expect = Expectation("fed", "job-1", "site-1", site.channel_key)
    v.verify(site.answer("job-1", nonce), expect)
    with pytest.raises(TokenReplayError):
        v.verify(site.answer("job-1", nonce), expect)


def test_challenge_this_verifier_never_issued(world: tuple[SimAuthority, Clock]) -> None:
    site, v, other = _site(world), _verifier(world), _verifier(world)
    token = site.answer("job-1", other.challenge())
    with pytest.raises(StaleFreshnessError):
        v.verify(token, Expectation("fed", "job-1", "site-1", site.channel_key))


def test_expired_token(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world)
    token = site.answer("job-1", v.challenge())
    world[1].now = T0 + timedelta(seconds=121)
    with pytest.raises(TokenExpiredError):
        v.verify(token, Expectation("fed", "job-1", "site-1", site.channel_key))


def test_token_lifetime_beyond_verifier_maximum(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world, max_lifetime=60)
    with pytest.raises(TokenExpiredError):
        v.verify(
            site.answer("job-1", v.challenge()),
            Expectation("fed", "job-1", "site-1", site.channel_key),
        )


def test_token_for_another_site(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world, "site-2"), _verifier(world)
    with pytest.raises(WrongSiteError):
        v.verify(
            site.answer("job-1", v.challenge()),
            Expectation("fed", "job-1", "site-1", site.channel_key),
        )


def test_token_for_another_job(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world)
    with pytest.raises(WrongJobError):
        v.verify(
            site.answer("job-2", v.challenge()),
            Expectation("fed", "job-1", "site-1", site.channel_key),
        )


def test_token_for_another_federation(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world)
    with pytest.raises(WrongJobError):
        v.verify(
            site.answer("job-1", v.challenge()),
            Expectation("other-fed", "job-1", "site-1", site.channel_key),
        )


def test_token_from_another_channel_key(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world)
    with pytest.raises(WrongChannelKeyError):
        v.verify(site.answer("job-1", v.challenge()), Expectation("fed", "job-1", "site-1", _key()))


def test_bad_measurement(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world, measurement=BAD), _verifier(world)
    with pytest.raises(PeerPolicyError) as e:
        v.verify(
            site.answer("job-1", v.challenge()),
            Expectation("fed", "job-1", "site-1", site.channel_key),
        )
    assert isinstance(e.value, PolicyViolationError)
    assert [r.field for r in e.value.result.failures()] == ["MEASUREMENT"]


def test_sim_evidence_refused_without_allow_simulated(world: tuple[SimAuthority, Clock]) -> None:
    auth, clock = world
    strict = Policy.from_dict(
        {"version": 1, "id": "prod", "snp": {"measurements": [GOOD.hex()]}, "require": ["snp"]}
    )
    site = _site(world)
    v = PeerVerifier(strict, extra_roots=(auth.root,), clock=clock)
    with pytest.raises(PeerPolicyError):
        v.verify(
            site.answer("job-1", v.challenge()),
            Expectation("fed", "job-1", "site-1", site.channel_key),
        )


def test_binding_edited_after_the_evidence_was_made(world: tuple[SimAuthority, Clock]) -> None:
    """A presenter who rewrites the binding (here: a new token id, to dodge the replay
    cache) no longer matches the REPORT_DATA the hardware signed."""
    site, v = _site(world), _verifier(world)
    tok = FederationToken.decode(site.answer("job-1", v.challenge()))
    forged = replace(tok, binding=replace(tok.binding, token_id="0" * 32))
    with pytest.raises(AttestationError) as e:
        v.verify(forged.encode(), Expectation("fed", "job-1", "site-1", site.channel_key))
    assert e.value.code == "federation-binding-mismatch"


def test_evidence_from_an_untrusted_root(world: tuple[SimAuthority, Clock]) -> None:
    site = _site(world)
    other = SimAuthority.ephemeral(T0)
    v = PeerVerifier(_policy(), extra_roots=(other.root,), clock=world[1])
    with pytest.raises(AttestationError):
        v.verify(
            site.answer("job-1", v.challenge()),
            Expectation("fed", "job-1", "site-1", site.channel_key),
        )


def test_beacon_in_window_accepted_once(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world, beacon_window=60)
    expect = Expectation("fed", "job-1", "site-1", site.channel_key)
    token = site.beacon("job-1", 60)
    v.verify(token, expect)
    with pytest.raises(TokenReplayError):
        v.verify(token, expect)


def test_beacon_from_an_old_window(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world, beacon_window=60)
    token = site.issue("job-1", Freshness.beacon(int(T0.timestamp()) - 600, 60)).encode()
    with pytest.raises(StaleFreshnessError):
        v.verify(token, Expectation("fed", "job-1", "site-1", site.channel_key))


def test_beacon_to_a_verifier_that_wants_challenges(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world)
    with pytest.raises(StaleFreshnessError):
        v.verify(site.beacon("job-1", 60), Expectation("fed", "job-1", "site-1", site.channel_key))


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(T0 - timedelta(days=1))
        .not_valid_after(T0 + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cn: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(T0 - timedelta(days=1))
        .not_valid_after(T0 + timedelta(days=30))
        .sign(ca[1], hashes.SHA256())
    )


def _cert_site(
    world: tuple[SimAuthority, Clock], cert: x509.Certificate, name: str = "site-1"
) -> TokenIssuer:
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return _site(world, name, key=channel_key_digest(cert), certificate=pem)


def test_startup_kit_certificate_binds_the_site(world: tuple[SimAuthority, Clock]) -> None:
    ca = _ca("project root CA")
    site = _cert_site(world, _leaf(ca, "site-1"))
    v = _verifier(world, beacon_window=60, channel_roots=(ca[0],))
    assert (
        v.verify(site.beacon("nvflare-cc", 60), Expectation("fed", "nvflare-cc")).site == "site-1"
    )


def test_certificate_issued_to_another_site(world: tuple[SimAuthority, Clock]) -> None:
    ca = _ca("project root CA")
    site = _cert_site(world, _leaf(ca, "site-2"), name="site-1")
    v = _verifier(world, beacon_window=60, channel_roots=(ca[0],))
    with pytest.raises(WrongSiteError):
        v.verify(site.beacon("nvflare-cc", 60), Expectation("fed", "nvflare-cc"))


def test_certificate_from_another_project_ca(world: tuple[SimAuthority, Clock]) -> None:
    site = _cert_site(world, _leaf(_ca("their root CA"), "site-1"))
    v = _verifier(world, beacon_window=60, channel_roots=(_ca("our root CA")[0],))
    with pytest.raises(WrongChannelKeyError):
        v.verify(site.beacon("nvflare-cc", 60), Expectation("fed", "nvflare-cc"))


def test_certificate_whose_key_is_not_the_bound_channel_key(
    world: tuple[SimAuthority, Clock],
) -> None:
    ca = _ca("project root CA")
    pem = _leaf(ca, "site-1").public_bytes(serialization.Encoding.PEM).decode()
    site = _site(world, key=_key(), certificate=pem)
    v = _verifier(world, beacon_window=60, channel_roots=(ca[0],))
    with pytest.raises(WrongChannelKeyError):
        v.verify(site.beacon("nvflare-cc", 60), Expectation("fed", "nvflare-cc"))


def test_no_channel_binding_at_all_is_refused(world: tuple[SimAuthority, Clock]) -> None:
    site, v = _site(world), _verifier(world, beacon_window=60)
    with pytest.raises(WrongChannelKeyError):
        v.verify(site.beacon("nvflare-cc", 60), Expectation("fed", "nvflare-cc"))


@pytest.mark.parametrize("text", ["", "not base64!", "e30", "eyJmb3JtYXQiOiJ4In0"])
def test_malformed_token(world: tuple[SimAuthority, Clock], text: str) -> None:
    with pytest.raises(MalformedEvidenceError):
        _verifier(world).verify(text, Expectation("fed", "job-1", "site-1", _key()))


class OtherBindingTee(SimTee):
    """A second device whose evidence was made for some other request."""

    def collect(self, report_data: bytes) -> EvidenceItem:
        return super().collect(hashlib.sha512(b"another request").digest())


def test_every_item_of_a_multi_device_token_is_bound(world: tuple[SimAuthority, Clock]) -> None:
    auth, clock = world
    two = TokenIssuer(
        federation="fed",
        site="site-1",
        channel_key=_key(),
        providers=[SimTee(auth, GOOD, clock), SimTee(auth, GOOD, clock)],
        clock=clock,
    )
    v = _verifier(world)
    verdict = v.verify(
        two.answer("job-1", v.challenge()), Expectation("fed", "job-1", "site-1", two.channel_key)
    )
    assert len(verdict.result.submods) == 2


def test_second_device_evidence_not_bound(world: tuple[SimAuthority, Clock]) -> None:
    auth, clock = world
    mixed = TokenIssuer(
        federation="fed",
        site="site-1",
        channel_key=_key(),
        providers=[SimTee(auth, GOOD, clock), OtherBindingTee(auth, GOOD, clock)],
        clock=clock,
    )
    v = _verifier(world)
    with pytest.raises(AttestationError) as e:
        v.verify(
            mixed.answer("job-1", v.challenge()),
            Expectation("fed", "job-1", "site-1", mixed.channel_key),
        )
    assert e.value.code == "federation-binding-mismatch"


# ---- EAR: a verifier service's result, carried by the site, bound to the token -------------
def _ear_site(
    world: tuple[SimAuthority, Clock], key: VerifierKey, nonce: Callable[[bytes], bytes]
) -> TokenIssuer:
    auth, clock = world

    def ear(items: list[EvidenceItem], rd: bytes) -> str:
        # the site's verifier service appraises exactly these items
        ctx = VerifyContext(now=clock(), extra_roots=(auth.root,))
        result = verify_and_appraise(EvidenceBundle(tuple(items)), _policy(), ctx)
        return issue_ear(result, key, now=clock(), ttl=timedelta(minutes=5), nonce=nonce(rd))

    return TokenIssuer(
        federation="fed",
        site="site-1",
        channel_key=_key(),
        providers=[SimTee(auth, GOOD, clock)],
        ear=ear,
        clock=clock,
    )


def test_ear_bound_to_the_token_is_checked(world: tuple[SimAuthority, Clock]) -> None:
    key = VerifierKey.generate()
    site = _ear_site(world, key, lambda rd: rd)
    v = _verifier(world, ear_jwks=key.jwks())
    verdict = v.verify(
        site.answer("job-1", v.challenge()), Expectation("fed", "job-1", "site-1", site.channel_key)
    )
    assert verdict.ear_status is not None and "not checked" not in verdict.ear_status


def test_ear_about_other_evidence(world: tuple[SimAuthority, Clock]) -> None:
    key = VerifierKey.generate()
    site = _ear_site(world, key, lambda rd: hashlib.sha512(b"another token").digest())
    v = _verifier(world, ear_jwks=key.jwks())
    with pytest.raises(AttestationError) as e:
        v.verify(
            site.answer("job-1", v.challenge()),
            Expectation("fed", "job-1", "site-1", site.channel_key),
        )
    assert "nonce" in e.value.code


def test_ear_from_an_untrusted_verifier_service(world: tuple[SimAuthority, Clock]) -> None:
    site = _ear_site(world, VerifierKey.generate(), lambda rd: rd)
    v = _verifier(world, ear_jwks=VerifierKey.generate().jwks())
    with pytest.raises(AttestationError):
        v.verify(
            site.answer("job-1", v.challenge()),
            Expectation("fed", "job-1", "site-1", site.channel_key),
        )


def test_ear_missing_where_the_verifier_requires_one(world: tuple[SimAuthority, Clock]) -> None:
    site = _site(world)
    v = _verifier(world, ear_jwks=VerifierKey.generate().jwks())
    with pytest.raises(AttestationError) as e:
        v.verify(
            site.answer("job-1", v.challenge()),
            Expectation("fed", "job-1", "site-1", site.channel_key),
        )
    assert e.value.code == "federation-ear-missing"
