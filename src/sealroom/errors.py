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

    def __init__(
        self, message: str, result: AppraisalResult | None, *, code: str | None = None
    ) -> None:
        # result is None only when the error arrived over HTTP (its detail says why)
        super().__init__(message, code=code)
        self._result = result

    @property
    def result(self) -> AppraisalResult:
        if self._result is None:
            raise RuntimeError("a policy violation received over HTTP carries no result")
        return self._result

    def diagnostics(self) -> str:
        lines = [self.message]
        if self._result is not None:
            lines.extend(f"  - {r.describe()}" for r in self._result.failures())
        return "\n".join(lines)


class AccessDeniedError(SealroomError):
    """Authorisation or key-release refusal."""

    code = "access-denied"
    exit_code = 1
    http_status = 403


class UnauthenticatedError(AccessDeniedError):
    """No credential, or one nobody issued (or that was revoked)."""

    code = "unauthenticated"
    http_status = 401


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

    def __init__(self, message: str, *, log: Any = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
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


# -- across HTTP -----------------------------------------------------------------------
# problem+json (RFC 9457) carries ``type`` = the error's code (often a specific slug such as
# "snp-signature-invalid") and the extension member ``error`` = the code of its class in
# this module. Servers build it with ``to_problem``; every client turns it back with
# ``error_from_problem``, so an error keeps its class, and with it the CLI's exit code.


def error_classes() -> dict[str, type[SealroomError]]:
    """Every class of this hierarchy, by its code."""
    out: dict[str, type[SealroomError]] = {}
    todo: list[type[SealroomError]] = [SealroomError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == __name__:
            out[cls.code] = cls
        todo.extend(cls.__subclasses__())
    return out


def class_code(e: SealroomError) -> str:
    """The code of the nearest class of this module (subclasses defined elsewhere travel
    as that class)."""
    for cls in type(e).__mro__:
        if isinstance(cls, type) and issubclass(cls, SealroomError) and cls.__module__ == __name__:
            return cls.code
    return SealroomError.code  # pragma: no cover - SealroomError is in the MRO


def to_problem(e: SealroomError, status: int, title: str) -> dict[str, object]:
    return {
        "type": e.code,
        "title": title,
        "status": status,
        "detail": e.message,
        "error": class_code(e),
    }


_BY_STATUS: dict[int, type[SealroomError]] = {
    400: InvalidInputError,
    401: UnauthenticatedError,
    403: AccessDeniedError,
    404: NotFoundError,
    409: ConflictError,
    411: LengthRequiredError,
    413: PayloadTooLargeError,
    422: InvalidInputError,
    429: CapacityError,
}


def error_from_problem(
    status: int, body: bytes, content_type: str = "", *, prefix: str = ""
) -> SealroomError:
    """The error a problem+json answer stands for: the class named by ``error`` (or by a
    ``type`` that is a class code), else one by HTTP status; ``type`` stays its code."""
    import json

    doc: object = None
    if body:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
    detail = body[:300].decode("utf-8", "replace") if body else f"HTTP {status}"
    type_ = ""
    cls: type[SealroomError] | None = None
    if isinstance(doc, dict):
        classes = error_classes()
        type_ = str(doc.get("type") or "")
        detail = str(doc.get("detail") or doc.get("title") or detail)
        cls = classes.get(str(doc.get("error") or "")) or classes.get(type_)
    if cls is None:
        cls = _BY_STATUS.get(status) or (UnavailableError if status >= 500 else InvalidInputError)
    message = prefix + detail
    code = type_ or (cls.code if cls.code != SealroomError.code else f"http-{status}")
    if issubclass(cls, PolicyViolationError):
        return cls(message, None, code=code)
    return cls(message, code=code)
