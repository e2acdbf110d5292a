"""One exception hierarchy for sealroom, by fault domain.

Every error carries a stable ``code`` slug (used as the problem+json ``type`` over HTTP and
shown by the CLI) and a human message that names the field, what was found and what was
expected. Foreign exceptions are wrapped once, at the boundary, with ``raise ... from e``.
Programmer misuse stays ``ValueError``/``TypeError``/``RuntimeError``.

CLI exit codes: 0 ok, 1 bad input, 2 not authentic, 3 unavailable, 4 policy violation,
5 the computation ran and failed (its receipt says why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sealroom.attestation.appraise import AppraisalResult


class SealroomError(Exception):
    """Base of every error sealroom raises on purpose."""

    code: ClassVar[str] = "sealroom-error"
    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            # A more specific slug for one failure (e.g. "snp-signature-invalid").
            self.code = code  # type: ignore[misc]

    def diagnostics(self) -> str:
        """Human text, one or more lines, suitable for a terminal."""
        return self.message


class InvalidInputError(SealroomError):
    """Malformed request, config, manifest, policy or command-line input."""

    code = "invalid-input"
    exit_code = 1
    http_status = 400


class PayloadTooLargeError(InvalidInputError):
    """A request body larger than what the receiver accepts (refused before reading it)."""

    code = "payload-too-large"
    http_status = 413


class LengthRequiredError(InvalidInputError):
    """A streamed request body without the Content-Length its bound is checked against."""

    code = "length-required"
    http_status = 411


class MalformedEvidenceError(InvalidInputError):
    """Evidence bytes that cannot be parsed (parse stage). Never a verdict on trust."""

    code = "malformed-evidence"


class AttestationError(SealroomError):
    """Evidence is not authentic: signature, certificate chain, revocation, binding."""

    code = "attestation-failed"
    exit_code = 2
    http_status = 422


class PolicyViolationError(SealroomError):
    """Evidence is authentic but not acceptable under the policy; carries the result."""

    code = "policy-violation"
    exit_code = 4
    http_status = 422

    def __init__(self, message: str, result: AppraisalResult) -> None:
        super().__init__(message)
        self.result = result

    def diagnostics(self) -> str:
        lines = [self.message]
        lines.extend(f"  - {r.describe()}" for r in self.result.failures())
        return "\n".join(lines)


class AccessDeniedError(SealroomError):
    """Authorisation or key-release refusal."""

    code = "access-denied"
    exit_code = 1
    http_status = 403


class NotFoundError(SealroomError):
    code = "not-found"
    exit_code = 1
    http_status = 404


class ConflictError(SealroomError):
    code = "conflict"
    exit_code = 1
    http_status = 409


class RunFailedError(ConflictError):
    """The computation ran and failed: a verified receipt says so and why. Carries the
    decrypted run log (``log``) where the caller could open it."""

    code = "run-failed"
    exit_code = 5

    def __init__(self, message: str, *, log: Any = None) -> None:
        super().__init__(message)
        self.log = log


class UnavailableError(SealroomError):
    """Collateral, device, database or peer unreachable or missing."""

    code = "unavailable"
    exit_code = 3
    http_status = 503


class CapacityError(SealroomError):
    """No room: a graceful rejection."""

    code = "capacity"
    exit_code = 3
    http_status = 429
