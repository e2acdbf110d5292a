"""Confidential Compute Layer endpoints (/compute/status, /compute/attestation), health."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select

from sealroom.controlplane.api.deps import CP
from sealroom.controlplane.api.models import available_models
from sealroom.controlplane.services.computations import capacities
from sealroom.controlplane.services.hosts import tee_labels
from sealroom.controlplane.store.models import Computation, Host
from sealroom.protocol.api import (
    ComputeAttestation,
    ComputeStatus,
    Health,
    SystemMetrics,
)
from sealroom.protocol.lifecycle import ENCLAVE_UP

router = APIRouter()

INSTRUCTIONS = (
    "The control plane is untrusted by design and runs outside a TEE here, so it has no "
    "evidence of its own (attestation_report is null, tee_type 'none'). Trust comes from "
    "each enclave: fetch its evidence from the enclave endpoint (GET /attestation?nonce=...) "
    "and check it with your own policy: `sealroom enclave verify URL --policy FILE`, or "
    "`sealroom attest verify EVIDENCE --policy FILE` for a saved evidence file. Simulated "
    "(sim) evidence proves nothing about confidentiality and every policy rejects it unless "
    "it says allow_simulated: true."
)


@router.get("/healthz")
def healthz() -> Health:
    return Health(ok=True)


@router.get("/api/v1/compute/status")
def compute_status(cp: CP) -> ComputeStatus:
    with cp.store.session() as s:
        caps = capacities(s)
        verified_of = {
            hid: set(v or ()) for hid, v in s.execute(select(Host.id, Host.tee_verified))
        }
        running = (
            s.scalar(
                select(func.count())
                .select_from(Computation)
                .where(Computation.state.in_(ENCLAVE_UP))
            )
            or 0
        )
    online = [h for h in caps if h.online]
    claimed = sorted({k for h in online for k in h.tee_kinds})
    verified = sorted({k for h in online for k in verified_of.get(h.host_id, ())})
    # A host's registration is its word; only evidence this control plane verified (in a
    # receipt, against the manifest's policy) makes a TEE kind "verified".
    if not online:
        attestation = "none"
    elif any(k != "sim" for k in verified):
        attestation = "verified"
    elif verified:
        attestation = "simulated"
    else:
        attestation = "claimed"
    return ComputeStatus(
        status="operational" if online else "degraded",
        tee_technology=", ".join(tee_labels(claimed, verified)).replace(" (verified)", "")
        or "none",
        attestation_status=attestation,  # type: ignore[arg-type]
        tee_claimed=claimed,
        tee_verified=verified,
        available_models=available_models(cp),
        system_metrics=SystemMetrics(
            hosts_online=len(online),
            hosts_total=len(caps),
            computations_running=int(running),
            cpu_total=sum(h.total.vcpus for h in online),
            cpu_used=sum(h.used.vcpus for h in online),
            memory_mb_total=sum(h.total.memory_mb for h in online),
            memory_mb_used=sum(h.used.memory_mb for h in online),
        ),
    )


@router.get("/api/v1/compute/attestation")
def compute_attestation(cp: CP) -> ComputeAttestation:
    return ComputeAttestation(
        attestation_report=None,
        tee_type="none",
        timestamp=cp.settings.clock(),
        verification_service="sealroom attest verify",
        verification_instructions=INSTRUCTIONS,
    )
