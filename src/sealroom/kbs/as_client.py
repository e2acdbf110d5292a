"""Client of the attestation service: post evidence, check the EAR against a pinned JWKS.

The service's answer is not trusted: only the EAR's signature under a key the *relying
party* pinned beforehand (``--service-jwks``, fetched once over a channel it trusts), its
time, its nonce and its claims decide. Taking the JWKS from the same service at the same
time would let whoever answers (a compromised service, anyone on the path) sign any
verdict (ADR 0025).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from sealroom.attestation.ear import EarToken, load_jwks, verify_ear
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.errors import UnavailableError, error_from_problem

PREFIX = "/api/v1/attestation"


@dataclass(frozen=True)
class RemoteVerdict:
    token: EarToken
    raw: str
    failed_rules: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not self.failed_rules and self.token.status.value in ("affirming", "warning")


def _post(url: str, path: str, body: Any, timeout: float) -> dict[str, Any]:
    try:
        r = httpx.post(url.rstrip("/") + path, json=body, timeout=timeout)
    except httpx.HTTPError as e:
        raise UnavailableError(f"attestation service {url} unreachable: {e}") from e
    if r.status_code != 200:
        raise error_from_problem(
            r.status_code,
            r.content,
            r.headers.get("content-type", ""),
            prefix="attestation service: ",
        )
    out = r.json()
    if not isinstance(out, dict):
        raise UnavailableError("attestation service answered a non-object")
    return out


def challenge(url: str, *, timeout: float = 30.0) -> bytes:
    """A fresh single-use nonce from the service (put it in the evidence)."""
    return base64.b64decode(_post(url, f"{PREFIX}/challenge", {}, timeout)["nonce"])


def verify_remote(
    url: str,
    bundle: EvidenceBundle,
    policy_id: str,
    pinned_jwks: bytes,
    *,
    now: datetime,
    nonce: bytes | None = None,
    timeout: float = 60.0,
    leeway: timedelta = timedelta(seconds=60),
) -> RemoteVerdict:
    """``leeway`` absorbs clock skew between the service and this relying party."""
    jwks = load_jwks(pinned_jwks)
    body: dict[str, Any] = {
        "evidence": {"format": "sealroom-evidence/v1", "items": []},
        "policy_id": policy_id,
    }
    body["evidence"]["items"] = [i.to_json_obj() for i in bundle.items]
    if nonce is not None:
        body["nonce"] = base64.b64encode(nonce).decode()
    answer = _post(url, f"{PREFIX}/verify", body, timeout)
    raw = answer.get("ear")
    if not isinstance(raw, str):
        raise UnavailableError("attestation service answered without an EAR")
    tok = verify_ear(raw, jwks, now=now, expected_nonce=nonce, leeway=leeway)
    failed: list[dict[str, Any]] = []
    for name, sub in tok.claims.get("submods", {}).items():
        for rule in sub.get("sealroom.failed-rules", []) if isinstance(sub, dict) else []:
            failed.append({"submod": name, **rule})
    return RemoteVerdict(tok, raw, failed)
