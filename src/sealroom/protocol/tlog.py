"""The transparency log's HTTP answers (control plane <-> CLI, witnesses), defined once.
Hashes are standard base64, as in C2SP checkpoints and tlog-proofs (docs/adr/0031)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class InclusionProofOut(BaseModel):
    index: int
    tree_size: int
    hashes: list[str]


class ConsistencyProofOut(BaseModel):
    old_size: int
    new_size: int
    hashes: list[str]


class Appended(BaseModel):
    index: int
    leaf_hash: Hex64


class EntryIn(BaseModel):
    """An entry another component (the key broker, a service supervisor) appends over HTTP
    as the operator: ``kind`` is any sealroom.tlog.entries.Kind but ``receipt`` (receipts
    are logged by the control plane once it verified them). PUBLIC FOREVER: hashes,
    identifiers, verdicts and times only, never a secret."""

    model_config = ConfigDict(extra="forbid")
    kind: Annotated[
        str,
        Field(pattern=r"^(service-deployment|heartbeat|key-release|lockdown|runtime-measurement)$"),
    ]
    payload: dict[str, Any]


class RuntimeMeasurementIn(BaseModel):
    """A runtime measurement the operator publishes (e.g. the launch measurement of a guest
    image or runtime build it offers): public facts, logged as given."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[
        str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    ]
    tee: Annotated[str, Field(pattern=r"^(sim|snp|tdx|tpm|nvidia)$")]
    measurement: Annotated[str, Field(pattern=r"^[0-9a-f]{64,128}$")]
    version: Annotated[str, Field(max_length=64)] = ""
    source: Annotated[str, Field(max_length=512)] = ""
