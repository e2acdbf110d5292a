"""Releasing key material to an attested party: lockdown guard, then audit, then bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sealroom.errors import SealroomError
from sealroom.kms.audit import evidence_digest
from sealroom.kms.lockdown import LockdownGuard, facts_of
from sealroom.kms.store import KeyManager


def release(
    km: KeyManager,
    key_id: str,
    version: int | None,
    claims: Mapping[str, Any],
    *,
    actor: str,
    policy: str,
) -> tuple[int, bytes]:
    """The material of ``key_id`` (primary, or ``version``) for a party whose verified
    EAR claims are ``claims`` and whom ``policy`` already allowed. Every outcome is
    audited: a lockdown in scope, a revoked or destroyed version, an unknown key."""
    digest = evidence_digest(claims)
    facts = facts_of(claims)
    try:
        info = km.info(key_id)
        LockdownGuard(km).check(claims, info.account)
        number, material = km.material(key_id, version)
    except SealroomError as e:
        if e.code != "kms-lockdown":  # the guard audited its own refusal
            km.audit.append(
                "refusal",
                actor=actor,
                result="refused",
                key_id=key_id,
                version=version,
                evidence_digest=digest,
                policy=policy,
                detail={"reason": e.message, "facts": facts},
            )
        raise
    km.audit.append(
        "release",
        actor=actor,
        result="released",
        key_id=key_id,
        version=number,
        evidence_digest=digest,
        policy=policy,
        detail={"facts": facts, "account": info.account},
    )
    return number, material
