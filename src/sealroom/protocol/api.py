"""The control plane's user API models (CLI and parties <-> control plane), defined once:
the control plane answers with them, the typed client parses into them (ADR 0016).
Separate from the store's models.

The agent endpoints' models are the agent contract itself, in ``sealroom.protocol.agent``;
computation states are ``sealroom.protocol.lifecycle.State``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sealroom.protocol.lifecycle import State

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str


class AccountIn(_In):
    name: Name
    role: Literal["user", "admin"] = "user"


class AccountOut(BaseModel):
    id: str
    name: str
    role: str


Limit = Annotated[int, Field(ge=0, le=2**31 - 1)] | None


class QuotaIn(_In):
    """An account's own limits; null: the control plane's default."""

    computations: Limit = None
    vcpus: Limit = None
    memory_mb: Limit = None


class QuotaOut(BaseModel):
    """Effective limits (null: unlimited) and what unfinished computations hold."""

    computations: int | None
    vcpus: int | None
    memory_mb: int | None
    used_computations: int
    used_vcpus: int
    used_memory_mb: int


class AccountsOut(BaseModel):
    accounts: list[AccountOut]


class KeyOut(BaseModel):
    key_id: str
    key: str


class MeOut(BaseModel):
    account_id: str
    name: str
    role: str


class JoinTokenOut(BaseModel):
    token: str
    expires_at: datetime


class ResourcesOut(BaseModel):
    cpu_total: int
    cpu_used: int
    memory_mb_total: int
    memory_mb_used: int
    gpu_total: int
    gpu_used: int
    disk_mb_total: int
    disk_mb_used: int


class HostOut(BaseModel):
    id: str
    name: str
    state: Literal["online", "lost"]
    last_heartbeat: datetime
    # what the host said at registration / in heartbeats: a claim, nothing more
    tee_kinds_claimed: list[str]
    # kinds of evidence the control plane verified in a receipt from this host
    # ("sim" for simulated evidence), and when
    tee_kinds_verified: list[str]
    tee_verified_at: datetime | None
    # one label per kind: "snp (claimed)", "sim (verified)"
    tee: list[str]
    resources: ResourcesOut
    enclaves: int
    # `sealroom host drain`: nothing new is placed on it; what runs there finishes
    draining: bool = False


class HostsOut(BaseModel):
    hosts: list[HostOut]


class HostDrainIn(BaseModel):
    draining: bool = True


class HostChangedOut(BaseModel):
    id: str
    name: str
    state: Literal["online", "lost", "removed"]
    draining: bool


class ComputationIn(_In):
    manifest: dict[str, Any]
    tee: Literal["sim", "snp", "tdx"] = "sim"
    queue: bool = False


class ComputationCreated(BaseModel):
    id: str
    state: State
    manifest_hash: str
    host_id: str | None


class ComputationOut(BaseModel):
    id: str
    name: str
    state: State
    reason: str
    # the outcome a destroyed computation had (completed | failed), and the whole story in
    # words: "completed", "failed: <reason>", "cancelled", "... (enclave destroyed)"
    outcome: State | None = None
    status: str = ""
    manifest_hash: str
    host_id: str | None
    enclave_url: str | None
    created_at: datetime
    updated_at: datetime


class ComputationDetail(ComputationOut):
    manifest: dict[str, Any]
    events_count: int
    tee: str


class ComputationsOut(BaseModel):
    computations: list[ComputationOut]


class StateOut(BaseModel):
    state: State


class EventOut(BaseModel):
    seq: int
    time: datetime
    type: str
    state: str
    reason: str
    message: str
    # "host": relayed by the host agent from the enclave (the host's word);
    # "control-plane": written by the control plane itself
    source: Literal["control-plane", "host"]


class SlotOut(BaseModel):
    name: str
    filled: bool


class PartyViewOut(BaseModel):
    """A computation's public state, for a party named in its manifest who proved its key
    (docs/adr/0037): no account's data, no manifest beyond what the party holds."""

    id: str
    party: str
    state: State
    outcome: State | None
    status: str
    manifest_hash: str
    enclave_url: str | None
    slots: list[SlotOut]
    receipt: bool


class EventsOut(BaseModel):
    events: list[EventOut]


class ChallengeOut(BaseModel):
    challenge: str


class SystemMetrics(BaseModel):
    hosts_online: int
    hosts_total: int
    computations_running: int
    cpu_total: int
    cpu_used: int
    memory_mb_total: int
    memory_mb_used: int


class ComputeStatus(BaseModel):
    status: Literal["operational", "degraded", "maintenance"]
    # verified kinds, then claimed-only ones marked "(claimed)", e.g. "sim, snp (claimed)"
    tee_technology: str
    # verified: evidence of a real TEE verified on an online host; simulated: only sim
    # evidence verified; claimed: hosts only claim TEE kinds; none: no host online
    attestation_status: Literal["verified", "simulated", "claimed", "none"]
    tee_claimed: list[str]
    tee_verified: list[str]
    available_models: list[str]
    system_metrics: SystemMetrics


class ModelOut(BaseModel):
    """A registered model (docs/adr/0040): the facts of its pinned spec."""

    id: str
    name: str
    model_version: str
    format: str
    sha256: str
    size: int
    licence: str
    spec_hash: str
    owner: str
    created_at: datetime


class ModelsOut(BaseModel):
    models: list[ModelOut]


class ComputeAttestation(BaseModel):
    attestation_report: str | None
    tee_type: str
    timestamp: datetime
    # the attestation service's verify URL (None: this control plane names none)
    verification_service: str | None
    verification_instructions: str


class Health(BaseModel):
    ok: bool
