"""The key manager behind the key broker (``sealroom.kbs`` seams).

:class:`KmsBroker` gives the KBS three things:

- ``resource_store``: resources ``kms/<key_id>/primary`` and ``kms/<key_id>/v<N>`` are
  the plaintext of that KMS key version, unwrapped under the KEK at release time; every
  other path goes to the KBS's own store. KMS keys are not put or deleted through the
  KBS admin API (``sealroom kms key ...`` manages them).
- ``guard``: refuses, on every resource request, a release in scope of a lockdown
  (evaluated against the EAR claims of the session, so sessions and tokens issued before
  the lockdown are refused too) and a revoked, destroyed or unknown KMS key version.
- ``audit``: every release and refusal of the KBS becomes a KMS audit event (hash-chained)
  with the evidence digest, the resource policy and, for a release, the facts a later
  lockdown looks at (kind, measurement, chip id, TCB, HOST_DATA).
"""

from __future__ import annotations

import re
from typing import Any

from sealroom.errors import AccessDeniedError, SealroomError
from sealroom.kbs.seams import (
    AuditEvent,
    ReleaseContext,
    ReleaseRefused,
    ResourcePath,
    ResourceStore,
)
from sealroom.kms.audit import evidence_digest
from sealroom.kms.lockdown import LockdownGuard, facts_of
from sealroom.kms.store import KeyManager

REPOSITORY = "kms"
_TAG = re.compile(r"primary|v([1-9][0-9]{0,8})")


def kms_path(path: ResourcePath) -> tuple[str, int | None] | None:
    """(key id, version or None for the primary) of a KMS resource path, else None."""
    if path.repository != REPOSITORY:
        return None
    m = _TAG.fullmatch(path.tag)
    if m is None:
        return None
    return path.type, int(m.group(1)) if m.group(1) else None


class _Refused(ReleaseRefused):
    code = "kms-release-refused"


class KmsResourceReadOnly(AccessDeniedError):
    """An admin write or delete of a ``kms/...`` resource through the KBS: KMS keys are
    managed with ``sealroom kms key ...`` (versions, audit), never overwritten by bytes."""

    code = "kms-resource-read-only"


class KmsBroker:
    """Wire with ``create_app(..., resource_store=b.store, guards=[b.guard],
    audit=[b.audit])``."""

    def __init__(self, km: KeyManager, fallback: ResourceStore) -> None:
        self.km = km
        self.fallback = fallback
        self.lockdown = LockdownGuard(km, refuse=lambda msg: ReleaseRefused(msg))
        # (session, path) -> (claims, resolved version), from the guard to the audit hook:
        # the KBS calls guard, store.get and audit in one request without yielding.
        self._pending: dict[tuple[str, str], tuple[dict[str, Any], int | None]] = {}
        self._audited: set[tuple[str, str]] = set()
        self.store: ResourceStore = _Store(self)

    def guard(self, ctx: ReleaseContext, /) -> None:
        kp = kms_path(ctx.path)
        account = None
        version: int | None = None
        if kp is not None:
            key_id, version = kp
            try:
                info = self.km.info(key_id)
            except SealroomError as e:
                raise _Refused(e.message) from e
            account = info.account
            number = info.primary if version is None else version
            states = {v.version: v.state for v in info.versions}
            state = states.get(number, "no such version") if number is not None else "destroyed"
            if state != "active":
                raise _Refused(f"key {key_id} v{number}: {state}")
            version = number
        at = (ctx.session_id, str(ctx.path))
        try:
            self.lockdown.check(ctx.claims, account)
        except ReleaseRefused:
            self._audited.add(at)  # the guard wrote its own refusal event
            raise
        self._pending[at] = (dict(ctx.claims), version)

    def audit(self, event: AuditEvent, /) -> None:
        at = (event.session_id or "", event.path)
        pending = self._pending.pop(at, None)
        if at in self._audited:
            self._audited.discard(at)
            return
        try:
            kp = kms_path(ResourcePath.parse(event.path))
        except ValueError:
            kp = None
        key_id = kp[0] if kp else None
        if event.outcome == "released":
            claims, version = pending if pending else ({}, None)
            account = self.km.info(key_id).account if key_id else None
            self.km.audit.append(
                "release",
                actor=f"kbs-session:{event.session_id or 'bearer'}",
                result="released",
                key_id=key_id,
                version=version,
                evidence_digest=evidence_digest(claims) if claims else event.claims_digest,
                policy=event.policy or None,
                detail={
                    "resource": event.path,
                    "tee": event.tee,
                    "facts": facts_of(claims),
                    "account": account,
                },
            )
        else:
            self.km.audit.append(
                "refusal",
                actor=f"kbs-session:{event.session_id or 'bearer'}",
                result="refused",
                key_id=key_id,
                evidence_digest=event.claims_digest,
                policy=event.policy or None,
                detail={"resource": event.path, "tee": event.tee, "reason": event.reason},
            )


class _Store:
    def __init__(self, broker: KmsBroker) -> None:
        self.b = broker

    def get(self, path: ResourcePath) -> bytes | None:
        kp = kms_path(path)
        if kp is None:
            return self.b.fallback.get(path)
        try:
            return self.b.km.material(*kp)[1]
        except SealroomError:
            return None

    def put(self, path: ResourcePath, value: bytes) -> None:
        if path.repository == REPOSITORY:
            raise KmsResourceReadOnly(
                f"{path}: the kms repository holds KMS key versions; they are created and "
                "rotated with `sealroom kms key create|rotate`, never written through the KBS"
            )
        self.b.fallback.put(path, value)

    def delete(self, path: ResourcePath) -> bool:
        if path.repository == REPOSITORY:
            raise KmsResourceReadOnly(
                f"{path}: KMS keys are revoked or destroyed with `sealroom kms key "
                "revoke|destroy`, never deleted through the KBS"
            )
        return self.b.fallback.delete(path)

    def list(self) -> list[ResourcePath]:
        keys = [
            ResourcePath(REPOSITORY, k.key_id, "primary")
            for k in self.b.km.list()
            if not k.destroyed
        ]
        return keys + self.b.fallback.list()
