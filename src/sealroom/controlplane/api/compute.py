"""Confidential Compute Layer endpoints (/compute/status, /compute/attestation), health."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter
from sqlalchemy import func, select

from sealroom.controlplane.api.deps import CP
from sealroom.controlplane.api.models import available_models
from sealroom.controlplane.services.computations import capacities
from sealroom.controlplane.services.hosts import tee_labels
from sealroom.controlplane.store.models import Computation, Host
from sealroom.errors import InvalidInputError
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
SERVICE_INSTRUCTIONS = (
    " Or send evidence to the attestation service named in verification_service: "
    "`sealroom attest verify EVIDENCE --service URL --policy-id ID --service-jwks FILE` "
    "(POST {evidence, nonce, policy_id}; a fresh nonce from POST "
    "/api/v1/attestation/challenge); its answer is an EAR you check against the service's "
    "JWKS (/.well-known/jwks.json) pinned beforehand, never one fetched with the answer."
)
VERIFY_PATH = "/api/v1/attestation/verify"


def verification_service(base: str | None) -> str | None:
    """The attestation service's verify URL from its base URL (a setting); a base that is not
    an http(s) URL is refused (at start: ``create_app`` calls this)."""
    if base is None:
        return None
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise InvalidInputError(
            f"attestation service {base!r} is not an http(s) URL (e.g. http://127.0.0.1:8090)"
        )
    return base.rstrip("/") + VERIFY_PATH


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
    service = verification_service(cp.settings.attestation_service)
    return ComputeAttestation(
        attestation_report=None,
        tee_type="none",
        timestamp=cp.settings.clock(),
        verification_service=service,
        verification_instructions=INSTRUCTIONS + (SERVICE_INSTRUCTIONS if service else ""),
    )
