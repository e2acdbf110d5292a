"""The enclave's HTTPS answers, defined once (ADR 0015): the runtime's server builds its
JSON bodies from these models and the pinned enclave client parses what it reads into
them. An answer that does not fit is the client's typed error (``parse_answer``), never a
KeyError. The public answers (/status, /events, /challenge) carry public lifecycle facts
only: adding a field here adds it to what any TLS client may read, so don't.

The receipt (GET /receipt) is not modelled here: it is a signed document whose signature
covers its exact content, so the client keeps the object as sent and
``protocol.receipt.verify_receipt`` turns it into a ``VerifiedReceipt``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sealroom.errors import MalformedEvidenceError, UnavailableError
from sealroom.protocol.enclave import EnclavePublicKeys
from sealroom.protocol.lifecycle import State
from sealroom.protocol.runtime_lines import SlotState

Hex = Annotated[str, Field(pattern=r"^[0-9a-f]*$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The JSON object the enclave sends."""
        return self.model_dump(mode="json")


class PublicKeysWire(_Answer):
    tls_spki: Hex
    ed25519: Hex
    x25519: Hex

    @staticmethod
    def of(keys: EnclavePublicKeys) -> PublicKeysWire:
        return PublicKeysWire.model_validate(keys.to_json_obj())

    def keys(self) -> EnclavePublicKeys:
        return EnclavePublicKeys.from_json_obj(self.model_dump())


class AttestationAnswer(_Answer):
    """GET /attestation?nonce=HEX: fresh evidence, the enclave's public keys and the
    manifest it runs. The presenter's claims: the client checks each against its own."""

    evidence: dict[str, Any]
    enclave_keys: PublicKeysWire
    keys_digest: Hex
    manifest_hash: Sha256Hex
    manifest: dict[str, Any]
    nonce: Hex


class StatusAnswer(_Answer):
    """GET /status: the phase, why (runtime-worded), each slot's state and the limits."""

    manifest_hash: Sha256Hex
    state: State
    reason: str = ""
    slots: dict[str, SlotState] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)


class EnclaveEvent(_Answer):
    """One public lifecycle event (``PUBLIC_EVENT_TYPES``; data fields only from
    ``PUBLIC_EVENT_FIELDS``, absent when the event has none)."""

    time: str = ""
    seq: Annotated[int, Field(ge=0)]
    type: str
    message: str = ""
    slot: str | None = None
    code: str | None = None
    ok: bool | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class EventsAnswer(_Answer):
    """GET /events?after=N&wait=S."""

    events: list[EnclaveEvent]

    def wire(self) -> dict[str, Any]:
        return {"events": [e.wire() for e in self.events]}


class ChallengeAnswer(_Answer):
    """GET /challenge: a one-time nonce for a result or log request."""

    challenge: Annotated[str, Field(pattern=r"^([0-9a-f]{2}){16,64}$")]

    @property
    def nonce(self) -> bytes:
        return bytes.fromhex(self.challenge)


class UploadAnswer(_Answer):
    """PUT /slots/{name} (201): what the enclave accepted into the slot."""

    slot: str
    sha256: Sha256Hex
    size: Annotated[int, Field(ge=0)]


A = TypeVar("A", bound=_Answer)


def parse_answer(model: type[A], body: bytes, what: str) -> A:
    """An enclave's answer as ``model``. Not JSON, or not this shape: the enclave (or
    whatever answers in its place) broke the contract, an UnavailableError
    (``bad-response``); an attestation answer that does not parse is evidence that does
    not parse, a MalformedEvidenceError."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(body)"
        message = f"enclave answer to {what} is malformed: {field}: {first['msg']}"
        if model is AttestationAnswer:
            raise MalformedEvidenceError(message) from e
        raise UnavailableError(message, code="bad-response") from e
