"""Refusals of a federation peer's token, one class per reason (ADR 0028).

Each is a subclass of the fault domain it belongs to (``sealroom.errors``), so the CLI and
problem+json map them like any other error, and carries a stable ``code``.
"""

from __future__ import annotations

from sealroom.errors import AttestationError, ConflictError, PolicyViolationError


class TokenReplayError(AttestationError):
    """A token (by its id) or a challenge this verifier has already consumed."""

    code = "federation-replay"


class TokenExpiredError(AttestationError):
    """The token's ``expires_at`` is past (or its ``issued_at`` is in the future)."""

    code = "federation-token-expired"


class StaleFreshnessError(AttestationError):
    """The token answers no challenge this verifier issued, or a beacon outside its window."""

    code = "federation-freshness"


class WrongSiteError(AttestationError):
    """The token names another site than the one the verifier expects."""

    code = "federation-wrong-site"


class WrongJobError(AttestationError):
    """The token is bound to another federation or job."""

    code = "federation-wrong-job"


class WrongChannelKeyError(AttestationError):
    """The token is bound to another channel key than the one the verifier sees."""

    code = "federation-wrong-channel-key"


class PeerPolicyError(PolicyViolationError):
    """Authentic evidence that the verifier's own policy refuses (measurement, TCB, ...)."""

    code = "federation-policy"


class BelowMinimumError(ConflictError):
    """Fewer accepted participants than the job's minimum."""

    code = "federation-below-minimum"
