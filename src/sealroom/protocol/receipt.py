"""Receipts: what the enclave signs when a run ends (completed or failed).

A receipt is ``signed_json(payload, receipt_key, RECEIPT_DOMAIN)`` where ``payload`` is::

    {"version": 1, "manifest_hash", "algorithm_sha256", "datasets": {name: sha256},
     "results": {consumer: {"sha256", "size"}}, "logs": {reader: {"sha256", "size"}},
     "exit": {"ok", "code", "reason"},
     "started_at", "ended_at", "enclave_keys": {tls_spki, ed25519, x25519},
     "evidence": <sealroom-evidence/v1>}

The evidence's REPORT_DATA binds (manifest_hash, digest of the enclave keys, nonce) with
nonce = receipt_nonce(canonical(payload without "evidence")), so the evidence vouches for
the key that signed this very receipt content. Verification is offline: signature,
evidence against the manifest's policy, the binding, and the manifest's hashes.

The runtime builds and signs receipts; every party (CLI, clients) verifies them: both
sides use this one module.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sealroom.attestation.appraise import AppraisalResult, RuleResult, Trust
from sealroom.attestation.binding import ReportDataInputs, sealroom_report_data
from sealroom.attestation.evidence import parse_envelope
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.verifier import VerifiedItem, appraise, verify_bundle
from sealroom.crypto.canonical import canonical_json
from sealroom.crypto.signing import signed_json, verify_signed_json
from sealroom.errors import AttestationError, MalformedEvidenceError
from sealroom.protocol.enclave import RECEIPT_DOMAIN, EnclavePublicKeys, receipt_nonce


def receipt_core(
    *,
    manifest_hash: bytes,
    algorithm_sha256: str,
    datasets: dict[str, str],
    results: dict[str, dict[str, Any]],
    logs: dict[str, dict[str, Any]],
    ok: bool,
    code: int | None,
    reason: str,
    started_at: datetime | None,
    ended_at: datetime,
    enclave_keys: EnclavePublicKeys,
) -> dict[str, Any]:
    return {
        "version": 1,
        "manifest_hash": manifest_hash.hex(),
        "algorithm_sha256": algorithm_sha256,
        "datasets": dict(sorted(datasets.items())),
        "results": dict(sorted(results.items())),
        "logs": dict(sorted(logs.items())),
        "exit": {"ok": ok, "code": code, "reason": reason},
        "started_at": started_at.isoformat() if started_at else None,
        "ended_at": ended_at.isoformat(),
        "enclave_keys": enclave_keys.to_json_obj(),
    }


def sign_receipt(core: dict[str, Any], evidence_json: str, key: Any) -> dict[str, Any]:
    payload = dict(core)
    payload["evidence"] = json.loads(evidence_json)
    return signed_json(payload, key, RECEIPT_DOMAIN)


@dataclass(frozen=True)
class VerifiedReceipt:
    payload: dict[str, Any]
    appraisal: AppraisalResult
    enclave_keys: EnclavePublicKeys

    @property
    def ok(self) -> bool:
        return bool(self.payload["exit"]["ok"])

    @property
    def simulated(self) -> bool:
        return any(s.claims.simulated for s in self.appraisal.submods)


def verify_receipt(
    doc: Any,
    *,
    manifest_hash: bytes,
    algorithm_sha256: str,
    dataset_sha256s: dict[str, str],
    policy: Policy,
    ctx: VerifyContext,
) -> VerifiedReceipt:
    """Offline verification. Raises AttestationError (forged, tampered, unbound),
    PolicyViolationError (authentic but not acceptable)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("payload"), dict):
        raise MalformedEvidenceError("receipt must be a signed JSON object with a payload")
    payload = doc["payload"]
    keys = EnclavePublicKeys.from_json_obj(payload.get("enclave_keys"))
    verify_signed_json(doc, keys.ed25519_key(), RECEIPT_DOMAIN)
    if payload.get("version") != 1:
        raise MalformedEvidenceError(f"receipt version is {payload.get('version')!r}, expected 1")
    if payload.get("manifest_hash") != manifest_hash.hex():
        raise AttestationError(
            f"receipt is for manifest {payload.get('manifest_hash')}, not {manifest_hash.hex()}",
            code="receipt-wrong-manifest",
        )
    if payload.get("algorithm_sha256") != algorithm_sha256:
        raise AttestationError("receipt names another algorithm", code="receipt-mismatch")
    if payload.get("datasets") != dict(sorted(dataset_sha256s.items())):
        raise AttestationError("receipt names other datasets", code="receipt-mismatch")
    core = {k: v for k, v in payload.items() if k != "evidence"}
    nonce = receipt_nonce(canonical_json(core))
    bundle = parse_envelope(json.dumps(payload.get("evidence")).encode())
    inputs = ReportDataInputs(manifest_hash, keys.digest)
    bound_ctx = VerifyContext(
        now=ctx.now,
        collateral=ctx.collateral,
        nonce=nonce,
        extra_roots=ctx.extra_roots,
        report_data_inputs=inputs,
        options=ctx.options,
    )
    verified = verify_bundle(bundle, bound_ctx)
    bound = check_binding(
        verified=verified,
        manifest_hash=manifest_hash,
        expected_report_data=sealroom_report_data(inputs, nonce),
    )
    result = appraise(verified, policy, bound_ctx, caller_rules=bound).require_ok()
    return VerifiedReceipt(payload, result, keys)


def check_binding(
    *, verified: list[VerifiedItem], manifest_hash: bytes, expected_report_data: bytes
) -> dict[str, list[RuleResult]]:
    """Mandatory, whatever the policy says: the CPU evidence's REPORT_DATA binds the
    enclave keys and nonce, and HOST_DATA (where the TEE has it) names the manifest.

    Raises on a mismatch; returns the checks as rules by submodule, to be reported with
    the policy's (``appraise(..., caller_rules=...)``): the nonce is bound there."""
    cpu = [v for v in verified if hasattr(v.claims, "report_data")]
    if not cpu:
        raise AttestationError("evidence carries no REPORT_DATA to bind", code="binding-missing")
    out: dict[str, list[RuleResult]] = {}
    for v in cpu:
        claims: Any = v.claims
        got: bytes = claims.report_data
        if not hmac.compare_digest(got, expected_report_data[: len(got)]):
            raise AttestationError(
                f"REPORT_DATA is {got.hex()}, expected {expected_report_data.hex()} "
                "(manifest hash, enclave keys, nonce): evidence not bound to this enclave",
                code="binding-mismatch",
            )
        host_data = getattr(claims, "host_data", None)
        if host_data is not None and host_data != manifest_hash:
            raise AttestationError(
                f"HOST_DATA is {host_data.hex()}, expected the manifest hash "
                f"{manifest_hash.hex()}: the enclave was launched for another computation",
                code="binding-mismatch",
            )
        out[v.name] = [
            RuleResult(
                "REPORT_DATA (sealroom binding)",
                got.hex(),
                "SHA-512(domain, manifest hash, enclave keys, nonce), checked by the client",
                True,
                Trust.INSTANCE_IDENTITY,
                binds_nonce=True,
            )
        ]
    return out
