"""The verifying side: a peer's token against this party's own policy, roots and nonces.

Everything a :class:`PeerVerifier` trusts is its own (ADR 0020): the policy, the roots its
evidence must chain to, the roots the channel certificate must chain to, the EAR keys,
the challenges it issued, the beacon window it accepts and the token ids it has seen. The
token only presents; nothing in it is a trust input.

Checks, in order, each refusal its own error (``federation.errors``): format; federation
and job; site; lifetime and expiry; freshness (a challenge this verifier issued and has not
consumed, or a beacon in the current or previous window); replay (token id); channel key
(expected digest, and/or a certificate chained to the verifier's channel roots whose
common name is the site); evidence authenticity; REPORT_DATA equal to the binding digest;
the verifier's policy; an EAR if the verifier holds EAR keys.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from sealroom.attestation.appraise import AppraisalResult, RuleResult, Trust
from sealroom.attestation.ear import EarStatus, verify_ear
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.verifier import VerifiedItem, appraise, verify_bundle
from sealroom.errors import AttestationError
from sealroom.federation.errors import (
    PeerPolicyError,
    StaleFreshnessError,
    TokenExpiredError,
    TokenReplayError,
    WrongChannelKeyError,
    WrongJobError,
    WrongSiteError,
)
from sealroom.federation.token import Binding, FederationToken, channel_key_digest

#: Clock skew tolerated on ``issued_at`` (seconds).
SKEW = 60
#: Longest token lifetime a verifier accepts by default (seconds).
MAX_LIFETIME = 3600
#: Seconds an issued challenge stays answerable.
CHALLENGE_TTL = 300


@dataclass(frozen=True)
class Expectation:
    """What the verifier knows about the token it is about to verify.

    ``site`` None: any site, but then the token must carry a certificate chained to the
    verifier's channel roots, and its common name is the site. ``channel_key`` None: the
    certificate decides the channel key (the NVFlare case, where ``verify(token)`` is not
    told which connection delivered the token)."""

    federation: str
    job: str
    site: str | None = None
    channel_key: str | None = None


@dataclass(frozen=True)
class PeerVerdict:
    site: str
    token_id: str
    expires_at: int
    result: AppraisalResult
    simulated: bool
    ear_status: str | None
    freshness: str


class PeerVerifier:
    def __init__(
        self,
        policy: Policy,
        *,
        extra_roots: Sequence[x509.Certificate] = (),
        channel_roots: Sequence[x509.Certificate] = (),
        ear_jwks: Mapping[str, Any] | None = None,
        beacon_window: int | None = None,
        max_lifetime: int = MAX_LIFETIME,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if beacon_window is not None and beacon_window <= 0:
            raise ValueError("beacon_window must be positive")
        self.policy = policy
        self.extra_roots = tuple(extra_roots)
        self.channel_roots = tuple(channel_roots)
        self.ear_jwks = ear_jwks
        self.beacon_window = beacon_window
        self.max_lifetime = max_lifetime
        self.clock = clock
        self._lock = threading.Lock()
        self._challenges: dict[str, int] = {}  # hex -> expiry (unix)
        self._consumed: dict[str, int] = {}  # consumed challenge hex -> expiry
        self._seen: dict[str, int] = {}  # token id -> token expiry (unix)

    # ---- challenges -------------------------------------------------------------------
    def challenge(self) -> bytes:
        """A fresh 32-byte challenge for one peer token; answerable once, for a while."""
        nonce = secrets.token_bytes(32)
        now = int(self.clock().timestamp())
        with self._lock:
            self._purge(now)
            self._challenges[nonce.hex()] = now + CHALLENGE_TTL
        return nonce

    def _purge(self, now: int) -> None:
        for table in (self._challenges, self._consumed, self._seen):
            for key in [k for k, exp in table.items() if exp < now - SKEW]:
                del table[key]

    # ---- verification -----------------------------------------------------------------
    def verify(self, token: str | bytes | FederationToken, expect: Expectation) -> PeerVerdict:
        tok = token if isinstance(token, FederationToken) else FederationToken.decode(token)
        b = tok.binding
        now_dt = self.clock()
        now = int(now_dt.timestamp())
        if b.federation != expect.federation or b.job != expect.job:
            raise WrongJobError(
                f"token is for federation {b.federation!r} job {b.job!r}, expected "
                f"{expect.federation!r} job {expect.job!r}"
            )
        if expect.site is not None and b.site != expect.site:
            raise WrongSiteError(f"token is for site {b.site!r}, expected {expect.site!r}")
        self._check_time(b, now)
        with self._lock:
            self._purge(now)
            if b.token_id in self._seen:
                raise TokenReplayError(
                    f"token {b.token_id} from site {b.site!r} was already presented to this "
                    "verifier"
                )
            self._check_freshness(b, now, consume=False)
        self._check_channel(tok, expect, now_dt)
        verdict = self._appraise(tok, now_dt)
        with self._lock:
            # Consumed only once authentic: a forged token cannot burn a site's challenge.
            if b.token_id in self._seen:
                raise TokenReplayError(f"token {b.token_id} was presented twice at once")
            self._check_freshness(b, now, consume=True)
            self._seen[b.token_id] = b.expires_at
        return verdict

    def _check_time(self, b: Binding, now: int) -> None:
        if b.expires_at - b.issued_at > self.max_lifetime:
            raise TokenExpiredError(
                f"token lifetime is {b.expires_at - b.issued_at}s, this verifier accepts at "
                f"most {self.max_lifetime}s"
            )
        if b.issued_at > now + SKEW:
            raise TokenExpiredError(
                f"token issued_at {b.issued_at} is in the future (now {now}, skew {SKEW}s)"
            )
        if now >= b.expires_at:
            raise TokenExpiredError(
                f"token from site {b.site!r} expired at {b.expires_at} (now {now})"
            )

    def _check_freshness(self, b: Binding, now: int, *, consume: bool) -> None:
        fr = b.freshness
        if fr.kind == "challenge":
            if fr.value in self._consumed:
                raise TokenReplayError(f"challenge {fr.value[:16]}... was already answered")
            exp = self._challenges.get(fr.value)
            if exp is None or exp < now:
                raise StaleFreshnessError(
                    "token answers no challenge this verifier issued (or one that timed out)"
                )
            if consume:
                del self._challenges[fr.value]
                self._consumed[fr.value] = exp
            return
        if self.beacon_window is None:
            raise StaleFreshnessError(
                "token carries a time beacon, but this verifier accepts only its own challenges"
            )
        seconds, _, index = fr.value.partition(":")
        current = now // self.beacon_window
        try:
            ok = int(seconds) == self.beacon_window and int(index) in (current, current - 1)
        except ValueError:
            ok = False
        if not ok:
            raise StaleFreshnessError(
                f"token beacon {fr.value!r} is not the current or previous "
                f"{self.beacon_window}s window ({self.beacon_window}:{current})"
            )

    def _check_channel(self, tok: FederationToken, expect: Expectation, now: datetime) -> None:
        b = tok.binding
        if expect.channel_key is not None and not hmac.compare_digest(
            expect.channel_key, b.channel_key
        ):
            raise WrongChannelKeyError(
                f"token is bound to channel key {b.channel_key[:16]}..., the channel's key is "
                f"{expect.channel_key[:16]}..."
            )
        if tok.certificate is None:
            if expect.channel_key is None:
                raise WrongChannelKeyError(
                    "token carries no channel certificate and the verifier knows no channel "
                    "key: nothing binds it to a channel"
                )
            return
        if not self.channel_roots:
            if expect.channel_key is None:
                raise WrongChannelKeyError(
                    "token carries a channel certificate, but this verifier has no channel "
                    "roots to check it against"
                )
            return
        try:
            cert = x509.load_pem_x509_certificate(tok.certificate.encode())
        except ValueError as e:
            raise WrongChannelKeyError(f"token channel certificate is unreadable: {e}") from e
        if not any(_issued_by(cert, root) for root in self.channel_roots):
            raise WrongChannelKeyError(
                f"token channel certificate ({cert.subject.rfc4514_string()}) is not issued by "
                "this verifier's channel roots"
            )
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise WrongChannelKeyError("token channel certificate is outside its validity")
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(cns[0].value) if cns else ""
        if cn != b.site:
            raise WrongSiteError(
                f"token names site {b.site!r}, its channel certificate is for {cn!r}"
            )
        if not hmac.compare_digest(channel_key_digest(cert), b.channel_key):
            raise WrongChannelKeyError(
                "token channel_key is not the key of the certificate it carries"
            )

    def _appraise(self, tok: FederationToken, now: datetime) -> PeerVerdict:
        b = tok.binding
        ctx = VerifyContext(now=now, extra_roots=self.extra_roots)
        verified = verify_bundle(tok.evidence, ctx)
        bound = bind_rules(verified, b.report_data(), b.site)
        result = appraise(verified, self.policy, ctx, caller_rules=bound)
        if not result.ok:
            failed = "; ".join(r.describe() for r in result.failures())
            raise PeerPolicyError(
                f"site {b.site!r}: evidence refused by policy {self.policy.id!r}: {failed}",
                result,
            )
        ear_status: str | None = None
        if self.ear_jwks is not None:
            if tok.ear is None:
                raise AttestationError(
                    f"site {b.site!r} presented no EAR, this verifier requires one",
                    code="federation-ear-missing",
                )
            # The EAR must be about this token: its eat_nonce is the binding digest.
            ear = verify_ear(tok.ear, self.ear_jwks, now=now, expected_nonce=b.report_data())
            if ear.status in (EarStatus.CONTRAINDICATED, EarStatus.NONE):
                raise AttestationError(
                    f"site {b.site!r}: EAR status is {ear.status}", code="federation-ear-status"
                )
            ear_status = str(ear.status)
        elif tok.ear is not None:
            ear_status = "carried, not checked (no EAR keys)"
        simulated = any(getattr(v.claims, "simulated", False) for v in verified)
        return PeerVerdict(
            site=b.site,
            token_id=b.token_id,
            expires_at=b.expires_at,
            result=result,
            simulated=simulated,
            ear_status=ear_status,
            freshness=b.freshness.kind,
        )


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    if cert.issuer != root.subject:
        return False
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


#: Claims that carry the caller's binding, by evidence kind: REPORT_DATA (SNP, TDX), a TPM
#: quote's extraData, an NVIDIA GPU's request nonce. A shorter field carries a prefix.
_BOUND_FIELDS = ("report_data", "extra_data", "nonce")
_MIN_BOUND = 32


def bind_rules(verified: list[VerifiedItem], want: bytes, site: str) -> dict[str, list[RuleResult]]:
    """Mandatory, whatever the policy says: every item carries the binding digest.

    Raises ``AttestationError`` (``federation-binding-mismatch``) for an item whose field
    differs, or that has no field that could carry it; returns the rules to report."""
    out: dict[str, list[RuleResult]] = {}
    for v in verified:
        got: bytes | None = None
        for name in _BOUND_FIELDS:
            value = getattr(v.claims, name, None)
            if isinstance(value, bytes | bytearray):
                got = bytes(value)
                break
        if got is None or len(got) < _MIN_BOUND:
            raise AttestationError(
                f"site {site!r}: evidence item {v.name} ({v.item.kind}) carries no field that "
                "binds the token (REPORT_DATA, extraData or nonce of at least 32 bytes)",
                code="federation-binding-missing",
            )
        if not hmac.compare_digest(got, want[: len(got)]):
            raise AttestationError(
                f"site {site!r}: {v.name} REPORT_DATA is {got.hex()[:32]}..., expected the "
                f"token binding {want.hex()[:32]}...: evidence not made for this token",
                code="federation-binding-mismatch",
            )
        out[v.name] = [
            RuleResult(
                "REPORT_DATA (federation token binding)",
                got.hex(),
                "SHA-512(domain, federation, job, site, channel key, freshness, id, times)",
                True,
                Trust.INSTANCE_IDENTITY,
                binds_nonce=True,
            )
        ]
    return out
