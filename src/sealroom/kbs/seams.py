"""The key broker's plug-in seams, for the key manager (``sealroom kms``).

The KBS server takes one :class:`ResourceStore`, a list of :class:`ReleaseGuard` callables
and a list of :class:`AuditHook` callables (``create_app(..., store=, guards=, audit=)``).
No web framework or database types cross these seams.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from sealroom.errors import AccessDeniedError


@dataclass(frozen=True)
class ResourcePath:
    """``<repository>/<type>/<tag>`` of ``/kbs/v0/resource/...``."""

    repository: str
    type: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}/{self.type}/{self.tag}"

    @classmethod
    def parse(cls, text: str) -> ResourcePath:
        parts = text.strip("/").split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"resource path must be <repository>/<type>/<tag>, got {text!r}")
        return cls(*parts)


class ResourceStore(Protocol):
    """For the key manager: where released bytes come from.

    The KBS's default is its SQL store (:class:`sealroom.kbs.store.SqlResourceStore`); the
    key manager may supply one that unwraps a key version under its KEK on ``get``.
    ``get`` returns None for an unknown resource (answered 404 ``InvalidRequestPath``)."""

    def get(self, path: ResourcePath) -> bytes | None: ...

    def put(self, path: ResourcePath, value: bytes) -> None: ...

    def delete(self, path: ResourcePath) -> bool: ...

    def list(self) -> list[ResourcePath]: ...


@dataclass(frozen=True)
class ReleaseContext:
    """What a guard or audit hook learns about one resource request.

    ``claims`` are the EAR claims the KBS issued for the session (verified by the KBS
    itself); ``session_id`` is the RCAR session; ``tee`` the Request's TEE;
    ``attested_at`` when the session's evidence was appraised (sessions and tokens issued
    before a lockdown are still in scope: compare with it)."""

    path: ResourcePath
    claims: Mapping[str, Any]
    session_id: str
    tee: str
    attested_at: datetime
    tee_pubkey: Mapping[str, str] = field(default_factory=dict)


class ReleaseRefused(AccessDeniedError):
    """A guard's typed refusal; answered as Trustee ``PolicyDeny`` (401) and audited."""

    code = "release-refused"


class ReleaseGuard(Protocol):
    """For the key manager (lockdown): called before every release, after the resource
    policy allowed it. Raise :class:`ReleaseRefused` to refuse; return None to allow."""

    def __call__(self, ctx: ReleaseContext, /) -> None: ...


@dataclass(frozen=True)
class AuditEvent:
    """One release decision. ``outcome`` is ``released`` or ``refused``; ``reason`` the
    refusal text (policy rule, guard message, unknown resource); ``policy`` names the
    resource policy that decided."""

    outcome: Literal["released", "refused"]
    path: str
    session_id: str | None
    tee: str | None
    reason: str
    policy: str
    at: datetime
    claims_digest: str | None = None


class AuditHook(Protocol):
    """For the key manager (audit trail): called on every release and refusal of the
    resource endpoint. Exceptions propagate: a release that cannot be audited fails."""

    def __call__(self, event: AuditEvent, /) -> None: ...
