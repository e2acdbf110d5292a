"""Receipts as an enclave on the sim TEE signs them, without running one: for tests of
what checks receipts (the control plane, clients). The evidence is real-layout sim SNP
evidence from the given authority, bound to the receipt exactly as the runtime binds it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sealroom.attestation.binding import ReportDataInputs, sealroom_report_data
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.crypto.canonical import canonical_json
from sealroom.manifest import Manifest
from sealroom.protocol.enclave import receipt_nonce
from sealroom.protocol.receipt import receipt_core, sign_receipt
from sealroom.runtime.enclave_keys import EnclaveKeys


def sim_receipt(
    manifest: Manifest,
    authority: SimAuthority,
    *,
    ok: bool = True,
    reason: str = "exit code 0",
    results: dict[str, dict[str, Any]] | None = None,
    measurement: bytes = bytes(48),
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    keys = EnclaveKeys(f"sealroom test enclave {manifest.id}", now=now)
    core = receipt_core(
        manifest_hash=manifest.manifest_hash,
        algorithm_sha256=manifest.algorithm.sha256.hex(),
        datasets={d.name: d.sha256.hex() for d in manifest.datasets},
        results=results or {},
        logs={},
        ok=ok,
        code=0 if ok else None,
        reason=reason,
        started_at=now,
        ended_at=now,
        enclave_keys=keys.public,
    )
    report_data = sealroom_report_data(
        ReportDataInputs(manifest.manifest_hash, keys.public.digest),
        receipt_nonce(canonical_json(core)),
    )
    report = authority.report(
        measurement=measurement, report_data=report_data, host_data=manifest.manifest_hash
    )
    evidence = EvidenceBundle.single(authority.evidence(report, collected_at=now)).to_json()
    return sign_receipt(core, evidence, keys.receipt_key)
