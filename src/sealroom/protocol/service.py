"""The service spec and the service enclave's attestation answer, defined once (ADR 0032).

A service spec says what a long-running enclave serves: the workload's kind
(``python`` | ``wasm`` | ``binary`` in the computation sandbox; ``oci`` where a container
engine exists), its ``command``, the ``port`` it listens on inside its sandbox, ``env``
and ``files``, resources, the restart policy, the egress allow-list and an optional
``domain``. Everything in it is measured:

    spec_hash = SHA-256("sealroom/service-spec/v1\\0" || JCS(measured form))

where the measured form (RFC 8785 canonical JSON) replaces each env value and each
file's bytes by its SHA-256, so the hash covers them while the measured form itself may be
shown to anyone. The sim TEE carries ``spec_hash`` in HOST_DATA (fixed by the host at
launch) and the runtime binds it, with its keys and the verifier's nonce, in REPORT_DATA
exactly as a computation binds its manifest hash (``attestation.binding``). The domain
prefix keeps a spec hash from ever equalling a manifest hash.

Pure: no I/O except ``load_spec`` reading the spec file and the files it names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sealroom.crypto.canonical import canonical_json
from sealroom.errors import InvalidInputError, MalformedEvidenceError
from sealroom.protocol.enclave_api import Hex, PublicKeysWire, Sha256Hex

SPEC_DOMAIN = b"sealroom/service-spec/v1\0"
#: The in-enclave attestation endpoint; everything else on the port is the workload's.
WELL_KNOWN_ATTESTATION = "/.well-known/sealroom/attestation"
#: Where the sandbox's bridge sockets live inside the sandbox (bind-mounted from the
#: enclave's storage; the only way in or out of the sandbox's network namespace).
BRIDGE_DIR = "/run/sealroom"
INGRESS_SOCKET = "ingress.sock"
#: Inside the sandbox, egress to allow-list entry ``i`` is 127.0.0.1:(EGRESS_PORT_BASE + i).
EGRESS_PORT_BASE = 20000
#: The in-enclave egress proxy (HTTP CONNECT; docs/adr/0041), inside the sandbox at
#: 127.0.0.1:EGRESS_PROXY_PORT: a granted HOST:PORT is dialled, any other is a breach.
EGRESS_PROXY_PORT = 19999
EGRESS_PROXY_SOCKET = "egress-proxy.sock"
#: A breach of the agent permission boundary, signed by the enclave (docs/adr/0041).
BREACH_DOMAIN = b"sealroom/breach/v1\0"
MAX_SPEC_BYTES = 16 << 20

_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EGRESS = re.compile(r"^(?P<host>[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
#: Env names the sandbox sets itself; a spec may not override them.
RESERVED_ENV = frozenset(
    {"PATH", "HOME", "TMPDIR", "LANG", "SEALROOM_INPUTS", "SEALROOM_RESULTS", "PORT"}
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SpecFile(_Model):
    """One file of the workload, mounted read-only at /algorithm/<path>."""

    content_b64: str
    executable: bool = False

    @property
    def content(self) -> bytes:
        return base64.b64decode(self.content_b64, validate=True)

    @field_validator("content_b64")
    @classmethod
    def _b64(cls, v: str) -> str:
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"content_b64 is not base64: {e}") from e
        return v


class Resources(_Model):
    vcpus: Annotated[int, Field(ge=1, le=64)] = 1
    memory_mb: Annotated[int, Field(ge=16, le=1 << 20)] = 256
    max_processes: Annotated[int, Field(ge=1, le=4096)] = 64
    tmp_mb: Annotated[int, Field(ge=1, le=1 << 16)] = 64
    state_mb: Annotated[int, Field(ge=1, le=1 << 20)] = 64


class RestartPolicy(_Model):
    """``no``: a stopped workload stays down; ``on-failure``: restarted after a non-zero
    exit or a signal; ``always``: restarted after any ending. At most ``max_restarts``
    restarts in a row (a run that stayed up ``backoff_reset_seconds`` resets the count)."""

    policy: Literal["no", "on-failure", "always"] = "on-failure"
    max_restarts: Annotated[int, Field(ge=0, le=1000)] = 5
    backoff_ms: Annotated[int, Field(ge=0, le=300_000)] = 500
    backoff_reset_seconds: Annotated[int, Field(ge=1, le=86400)] = 60


class ServiceSpec(_Model):
    version: Literal[1] = 1
    name: Annotated[str, Field(pattern=_NAME)]
    kind: Literal["python", "wasm", "binary", "oci"]
    command: Annotated[list[str], Field(min_length=1, max_length=256)]
    port: Annotated[int, Field(ge=1024, le=65535)]
    env: dict[str, str] = Field(default_factory=dict)
    files: dict[str, SpecFile] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    egress: list[str] = Field(default_factory=list, max_length=64)
    domain: str | None = None
    image: str | None = None  # kind oci only: NAME@sha256:DIGEST, locally available

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not _ENV_NAME.match(k):
                raise ValueError(f"env name {k!r} is not a valid variable name")
            if k in RESERVED_ENV or k.startswith("SEALROOM_"):
                raise ValueError(f"env name {k!r} is reserved for the sandbox")
            if "\0" in val:
                raise ValueError(f"env {k} holds a NUL byte")
        return v

    @field_validator("files")
    @classmethod
    def _files(cls, v: dict[str, SpecFile]) -> dict[str, SpecFile]:
        for name in v:
            p = PurePosixPath(name)
            if p.is_absolute() or not p.parts or ".." in p.parts or name != str(p):
                raise ValueError(f"file name {name!r} must be a plain relative path")
        return v

    @field_validator("egress")
    @classmethod
    def _egress(cls, v: list[str]) -> list[str]:
        for e in v:
            m = _EGRESS.match(e)
            if m is None or not 1 <= int(m["port"]) <= 65535:
                raise ValueError(f"egress entry {e!r} is not HOST:PORT")
        if len(set(v)) != len(v):
            raise ValueError("egress entries repeat")
        return v

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is not None and not _DOMAIN.match(v):
            raise ValueError(f"domain {v!r} is not a lower-case DNS name")
        return v

    @model_validator(mode="after")
    def _kind(self) -> ServiceSpec:
        if self.kind == "oci":
            if self.image is None or not _DIGEST_REF.match(self.image):
                raise ValueError("kind oci needs image: NAME@sha256:<64 hex> (pinned by digest)")
        else:
            if self.image is not None:
                raise ValueError(f"image is for kind oci only, not {self.kind}")
            entry = self.command[0]
            if entry not in self.files:
                raise ValueError(
                    f"command[0] {entry!r} must name one of the spec's files "
                    f"({', '.join(sorted(self.files)) or 'none given'})"
                )
        return self

    # ---- measurement -------------------------------------------------------------------
    def measured(self) -> dict[str, Any]:
        """The public form the hash covers: env values and file contents as SHA-256."""
        obj = self.model_dump(mode="json")
        obj["env"] = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in self.env.items()}
        obj["files"] = {
            k: {
                "sha256": hashlib.sha256(f.content).hexdigest(),
                "size": len(f.content),
                "executable": f.executable,
            }
            for k, f in self.files.items()
        }
        return obj

    @property
    def spec_hash(self) -> bytes:
        return hashlib.sha256(SPEC_DOMAIN + canonical_json(self.measured())).digest()

    def to_json_obj(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def egress_ports(self) -> dict[str, int]:
        """Allow-list entry -> the loopback port the workload dials inside its sandbox."""
        return {e: EGRESS_PORT_BASE + i for i, e in enumerate(self.egress)}


def parse_spec(obj: Any, where: str = "service spec") -> ServiceSpec:
    try:
        return ServiceSpec.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(spec)"
        raise InvalidInputError(f"{where}: {field}: {first['msg']}", code="bad-spec") from e


def load_spec(path: Path) -> ServiceSpec:
    """A spec file (YAML or JSON). A file entry may say ``source: PATH`` (relative to the
    spec file) or ``text: ...`` instead of ``content_b64``; they are read here, so the spec
    that travels (and is measured) always carries the bytes themselves."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read service spec {path}: {e.strerror or e}") from e
    if len(raw) > MAX_SPEC_BYTES:
        raise InvalidInputError(f"service spec {path} is over {MAX_SPEC_BYTES} bytes")
    # Imported here: the enclave runtime imports this module for its constants on every
    # start, and only a service spec is YAML.
    import yaml

    try:
        obj = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise InvalidInputError(f"service spec {path} does not parse: {e}") from e
    if not isinstance(obj, dict):
        raise InvalidInputError(f"service spec {path} is not a mapping", code="bad-spec")
    files = obj.get("files")
    if isinstance(files, dict):
        resolved: dict[str, Any] = {}
        for name, entry in files.items():
            if isinstance(entry, dict) and ("source" in entry or "text" in entry):
                entry = dict(entry)
                if "source" in entry:
                    src = path.parent / str(entry.pop("source"))
                    try:
                        data = src.read_bytes()
                    except OSError as e:
                        raise InvalidInputError(
                            f"service spec file {name}: cannot read {src}: {e.strerror or e}"
                        ) from e
                else:
                    data = str(entry.pop("text")).encode()
                entry["content_b64"] = base64.b64encode(data).decode()
            resolved[str(name)] = entry
        obj = {**obj, "files": resolved}
    return parse_spec(obj, f"service spec {path}")


# ---- the enclave's answer -------------------------------------------------------------------


class ServiceAttestationAnswer(BaseModel):
    """GET /.well-known/sealroom/attestation?nonce=HEX: fresh evidence, the enclave's
    public keys (the TLS key among them) and the spec hash. The presenter's claims; the
    verifier checks each against its own inputs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    evidence: dict[str, Any]
    enclave_keys: PublicKeysWire
    keys_digest: Hex
    spec_hash: Sha256Hex
    spec: dict[str, Any]  # the measured form (no env values, no file bytes)
    nonce: Hex

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_service_answer(body: bytes) -> ServiceAttestationAnswer:
    try:
        return ServiceAttestationAnswer.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise MalformedEvidenceError(
            f"service attestation answer is malformed: {field}: {first['msg']}"
        ) from e


# ---- continuous attestation (docs/adr/0033) --------------------------------------------------

HEARTBEAT_DOMAIN = b"sealroom/attestation-heartbeat/v1\0"


class HeartbeatRecord(BaseModel):
    """One re-attestation of a running enclave, as the verifier (the control plane, or
    ``sealroom service watch``) recorded it and signed it: with its own nonce, its own
    policy, at its own time. ``prev`` is the SHA-256 of the previous signed record's
    canonical form, so the records of one enclave form a chain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    subject: str  # the service's URL (or the control plane's id for it)
    seq: Annotated[int, Field(ge=0)]
    time: str  # RFC 3339, the verifier's clock
    nonce: Hex
    ok: bool
    reason: str = ""  # why not ok (error code and message), empty when ok
    spec_hash: str = ""
    keys_digest: str = ""
    policy_id: str = ""
    simulated: bool = False
    prev: str = ""


def heartbeat_hash(signed: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(signed)).hexdigest()


def heartbeat_log_payload(signer: str, signed: dict[str, Any]) -> dict[str, Any]:
    """The transparency-log payload (kind ``heartbeat``) of one signed heartbeat: the
    signer's Ed25519 key (hex) and the signed record as it is, so anyone holding the
    record recomputes the leaf. Public facts only (hashes, a verdict, a time)."""
    return {"signer": signer, "heartbeat": signed}


def deployment_log_payload(
    *, subject: str, spec_hash: str, keys_digest: str, signer: str, simulated: bool, time: str
) -> dict[str, Any]:
    """The transparency-log payload (kind ``service-deployment``) of a service the operator
    started and watches: which spec, which enclave keys, who signs its heartbeats."""
    return {
        "subject": subject,
        "spec_hash": spec_hash,
        "keys_digest": keys_digest,
        "heartbeat_signer": signer,
        "simulated": simulated,
        "time": time,
    }
