"""The presenting side: a site makes tokens from its own TEE's evidence.

An EAR, where a verifier service appraised the site's evidence, comes from the ``ear``
callback: it gets the evidence and the binding digest, which the EAR must carry as its
``eat_nonce``.

The evidence providers are the site's TEE (``sealroom.tee``: sim, configfs-tsm,
sev-guest, tpm2); each is asked for evidence with REPORT_DATA = the binding digest. A site
with a CPU TEE and GPUs passes several providers: every item carries the same binding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sealroom.attestation.evidence import EvidenceItem
from sealroom.federation.token import (
    Binding,
    FederationToken,
    Freshness,
    make_token,
    new_token_id,
)
from sealroom.tee.base import EvidenceProvider

#: Default token lifetime (seconds): long enough for a registration round trip, short
#: enough that a captured token is soon useless even where no challenge binds it.
DEFAULT_LIFETIME = 300


class TokenIssuer:
    def __init__(
        self,
        *,
        federation: str,
        site: str,
        channel_key: str,
        providers: Sequence[EvidenceProvider],
        lifetime: int = DEFAULT_LIFETIME,
        certificate: str | None = None,
        ear: Callable[[list[EvidenceItem], bytes], str | None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not providers:
            raise ValueError("a token issuer needs at least one evidence provider")
        if lifetime <= 0:
            raise ValueError("lifetime must be positive")
        self.federation = federation
        self.site = site
        self.channel_key = channel_key
        self.providers = tuple(providers)
        self.lifetime = lifetime
        self.certificate = certificate
        self.ear = ear
        self.clock = clock

    def binding(self, job: str, freshness: Freshness) -> Binding:
        now = int(self.clock().timestamp())
        return Binding(
            federation=self.federation,
            job=job,
            site=self.site,
            channel_key=self.channel_key,
            freshness=freshness,
            token_id=new_token_id(),
            issued_at=now,
            expires_at=now + self.lifetime,
        )

    def issue(self, job: str, freshness: Freshness) -> FederationToken:
        b = self.binding(job, freshness)
        rd = b.report_data()
        items = [p.collect(rd) for p in self.providers]
        # A verifier service's EAR about exactly this evidence, bound to the same digest
        # (its eat_nonce); the presenting site only carries it.
        ear = self.ear(items, rd) if self.ear else None
        return make_token(b, items, ear=ear, certificate=self.certificate)

    def answer(self, job: str, challenge: bytes) -> str:
        """A token answering a verifier's challenge."""
        return self.issue(job, Freshness.challenge(challenge)).encode()

    def beacon(self, job: str, window_seconds: int) -> str:
        """A token bound to the current time window (for transports that carry no challenge)."""
        now = int(self.clock().timestamp())
        return self.issue(job, Freshness.beacon(now, window_seconds)).encode()
