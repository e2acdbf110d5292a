"""The enclave runtime's stdout lines, the one channel from the trusted runtime to its
host (ADR 0015): JSON objects, one a line, discriminated by ``event``. The runtime writes
them with these models and the host agent parses them with ``parse_runtime_line``; both
sides use this one definition. Host-visible facts only: never what the algorithm printed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from sealroom.protocol.lifecycle import RUNTIME_PHASES, State

SlotState = Literal["empty", "uploading", "filled"]


class _Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def line(self) -> dict[str, Any]:
        """The JSON object written on stdout."""
        return self.model_dump(mode="json")


class Listening(_Line):
    event: Literal["listening"] = "listening"
    url: str
    manifest_hash: str
    keys_digest: str
    storage: dict[str, Any] = Field(default_factory=dict)  # where enclave storage lives
    #: "service": ``manifest_hash`` is the service spec hash (protocol.service)
    workload: Literal["computation", "service"] = "computation"


class StateLine(_Line):
    """The runtime entered a phase (one of the lifecycle's runtime phases)."""

    event: Literal["state"] = "state"
    state: State
    reason: str = ""
    slots: dict[str, SlotState] = Field(default_factory=dict)

    @field_validator("state")
    @classmethod
    def _runtime_phase(cls, v: State) -> State:
        if v not in RUNTIME_PHASES:
            raise ValueError(f"a runtime reports its phases only, not {v.value}")
        return v


class EnclaveEventLine(_Line):
    """A public enclave event (``PUBLIC_EVENT_TYPES``), by its sequence number."""

    event: Literal["enclave_event"] = "enclave_event"
    seq: int
    type: str
    message: str = ""


class ErrorLine(_Line):
    """The runtime refused to start."""

    event: Literal["error"] = "error"
    code: str = ""
    message: str


class OutboxFailed(_Line):
    event: Literal["outbox_failed"] = "outbox_failed"
    message: str


class WipeIncomplete(_Line):
    event: Literal["wipe_incomplete"] = "wipe_incomplete"
    failures: int


class ServiceHealthLine(_Line):
    """A service workload's public health (state, restarts, how it last ended)."""

    event: Literal["service_health"] = "service_health"
    state: str
    restarts: int = 0
    last_exit: str = ""
    since: str = ""


class BreachLine(_Line):
    """The workload tried to leave what it was granted (docs/adr/0041): the enclave
    stopped it, dropped its sessions and keys and exits. ``signed`` is a ``signed_json``
    document (domain ``BREACH_DOMAIN``) by the enclave's attested Ed25519 key. Public
    facts only: what was attempted is never named (a destination can carry data)."""

    event: Literal["breach"] = "breach"
    code: str
    signed: dict[str, Any]


class Stopped(_Line):
    event: Literal["stopped"] = "stopped"
    state: State


RuntimeLine = Annotated[
    Listening
    | StateLine
    | EnclaveEventLine
    | ErrorLine
    | OutboxFailed
    | WipeIncomplete
    | BreachLine
    | ServiceHealthLine
    | Stopped,
    Field(discriminator="event"),
]
_ADAPTER: TypeAdapter[RuntimeLine] = TypeAdapter(RuntimeLine)


def parse_runtime_line(obj: object) -> RuntimeLine | None:
    """A line as the contract's model; None for anything else (a host reading a log must
    not stop on one odd line)."""
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError:
        return None
