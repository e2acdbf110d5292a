"""The host agent <-> control plane contract, defined once (ADR 0015).

The control plane's API validates requests with these models, the agent's client builds
them and parses the replies with them, and the test fake of the control plane uses them
too. An agent reports *transitions* (each state its enclave entered, in order, with the
reason), never "the current state": the control plane checks every one with
``lifecycle.transition`` and records it as one event, so a fast run's ``running`` is
never skipped and a report cannot move a computation backwards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sealroom.protocol.lifecycle import ENCLAVE_STATES, State

BigInt = Annotated[int, Field(ge=0, le=2**53 - 1)]
HostName = Annotated[str, Field(min_length=1, max_length=128)]
TeeKind = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[a-z0-9-]+$")]
ComputationId = Annotated[str, Field(min_length=1, max_length=64)]

REGISTER_PATH = "/api/v1/agent/register"
HEARTBEAT_PATH = "/api/v1/agent/heartbeat"


def events_path(computation_id: str) -> str:
    return f"/api/v1/agent/computations/{computation_id}/events"


def blob_path(computation_id: str, name: str) -> str:
    return f"/api/v1/agent/computations/{computation_id}/blobs/{name}"


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu_total: BigInt = 0
    cpu_used: BigInt = 0
    memory_mb_total: BigInt = 0
    memory_mb_used: BigInt = 0
    gpu_total: BigInt = 0
    gpu_used: BigInt = 0
    disk_mb_total: BigInt = 0
    disk_mb_used: BigInt = 0


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    join_token: Annotated[str, Field(min_length=1, max_length=256)]
    name: HostName
    tee_kinds: Annotated[list[TeeKind], Field(max_length=16)] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)


class RegisterReply(BaseModel):
    host_id: str
    credential: str


class Transition(BaseModel):
    """One state an enclave entered, with why."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    state: State
    reason: Annotated[str, Field(max_length=4000)] = ""

    @field_validator("state")
    @classmethod
    def _enclave_state(cls, v: State) -> State:
        if v not in ENCLAVE_STATES:
            raise ValueError(
                f"an agent reports {', '.join(s.value for s in ENCLAVE_STATES)}, not {v.value}"
            )
        return v


class EnclaveReport(BaseModel):
    """One enclave in a heartbeat: the transitions since the last accepted heartbeat
    (oldest first; often none), its endpoint while it serves, and its usage."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    computation_id: ComputationId
    transitions: Annotated[list[Transition], Field(max_length=16)] = Field(default_factory=list)
    endpoint: Annotated[str, Field(max_length=512)] | None = None
    stats: dict[str, Any] = Field(default_factory=dict)


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    resources: Resources = Field(default_factory=Resources)
    tee_kinds: Annotated[list[TeeKind], Field(max_length=16)] | None = None
    enclaves: Annotated[list[EnclaveReport], Field(max_length=4096)] = Field(default_factory=list)


class Desired(BaseModel):
    """What the control plane wants of one computation on this host."""

    model_config = ConfigDict(frozen=True)
    computation_id: str
    action: Literal["run", "stop"]
    manifest: dict[str, Any] = Field(default_factory=dict)
    tee: str = "sim"


class HeartbeatReply(BaseModel):
    desired: list[Desired]
    heartbeat_interval: float


class AgentEvent(BaseModel):
    """An enclave event the agent forwards (allow-listed by the runtime), by its seq."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    seq: Annotated[int, Field(ge=0, le=2**62)]
    time: datetime | None = None
    type: Annotated[str, Field(max_length=64)] = "enclave"
    message: Annotated[str, Field(max_length=100_000)] = ""


class AgentEvents(BaseModel):
    model_config = ConfigDict(extra="ignore")
    events: Annotated[list[AgentEvent], Field(max_length=10_000)]
