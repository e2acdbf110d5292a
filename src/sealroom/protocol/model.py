"""Confidential model execution, defined once (docs/adr/0040): the model spec an enclave
pins, the sealed request and the signed answer. Imported by the runtime (which serves)
and by clients (which verify); pure, no I/O except ``load_model_spec``.

- **Model spec**: name, version, format (``onnx``), the SHA-256 and size of the weights,
  the worker's resources. ``model_spec_hash = SHA-256("sealroom/model-spec/v1\\0" ||
  JCS(spec))`` is what the host puts in HOST_DATA and the runtime binds in REPORT_DATA
  (the same binding as a manifest or a service spec), so evidence that verifies under a
  policy pinning HOST_DATA proves which weights the enclave serves: the runtime refuses
  to start on weights of any other hash.
- **Request**: ``POST /.well-known/sealroom/model/infer`` with body = sealroom sealed
  bytes (HPKE RFC 9180 + STREAM, ``crypto.sealing``) to the enclave's attested X25519
  key, ``info = REQUEST_INFO``, ``aad = model_spec_hash || keys_digest``. A relay (or
  the host) sees ciphertext only; a request sealed to another enclave does not open.
  The plaintext is JSON: ``{"inputs": {...}, "reply_to": X25519 hex, "evidence_sha256":
  hex}`` (the digest of the evidence the requester verified).
- **Answer**: the body is sealed to ``reply_to`` (``info = ANSWER_INFO``, ``aad =
  SHA-256(sealed request)``) and opens to JSON ``{"response_b64", "statement",
  "signature"}``: ``response`` are the exact bytes ``{"outputs": ...}`` (or ``{"error":
  ...}``), the statement a ``signed_json`` payload (domain ``ANSWER_DOMAIN``) over the
  model spec hash, the weights' SHA-256, the enclave keys digest, the evidence digest,
  SHA-256(request plaintext) and SHA-256(response bytes), signed by the enclave's Ed25519
  key, which the evidence binds through ``keys_digest``. Everything travels sealed, so
  not even a digest of a prompt or an answer is visible outside the two ends.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sealroom.crypto.canonical import canonical_json
from sealroom.errors import InvalidInputError, MalformedEvidenceError
from sealroom.protocol.enclave_api import Hex, Sha256Hex

MODEL_DOMAIN = b"sealroom/model-spec/v1\0"
ANSWER_DOMAIN = b"sealroom/model-answer/v1\0"
REQUEST_INFO = b"sealroom/model-request/v1"
ANSWER_INFO = b"sealroom/model-answer/v1"
INFER_PATH = "/.well-known/sealroom/model/infer"
MODEL_FILE = "model.onnx"
MAX_REQUEST_BYTES = 16 << 20
MAX_MODEL_SPEC_BYTES = 1 << 20
ONNX_MAGIC_HINT = b"\x08"  # an ONNX ModelProto starts with field 1 (ir_version, varint)

_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkerResources(_Model):
    vcpus: Annotated[int, Field(ge=1, le=64)] = 1
    memory_mb: Annotated[int, Field(ge=64, le=1 << 20)] = 1024
    max_processes: Annotated[int, Field(ge=4, le=4096)] = 64


class ModelSpec(_Model):
    """What a model-serving enclave pins. One enclave serves one model."""

    version: Literal[1] = 1
    name: Annotated[str, Field(pattern=_NAME)]
    model_version: Annotated[str, Field(min_length=1, max_length=64)] = "1"
    format: Literal["onnx"] = "onnx"
    sha256: Sha256Hex
    size: Annotated[int, Field(ge=1, le=1 << 40)]
    resources: WorkerResources = Field(default_factory=WorkerResources)
    licence: Annotated[str, Field(max_length=200)] = ""

    def to_json_obj(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def spec_hash(self) -> bytes:
        return model_spec_hash(self.to_json_obj())


def model_spec_hash(obj: dict[str, Any]) -> bytes:
    return hashlib.sha256(MODEL_DOMAIN + canonical_json(obj)).digest()


def parse_model_spec(obj: Any, where: str = "model spec") -> ModelSpec:
    try:
        return ModelSpec.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(spec)"
        raise InvalidInputError(f"{where}: {field}: {first['msg']}", code="bad-model-spec") from e


def load_model_spec(path: Path) -> ModelSpec:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read model spec {path}: {e.strerror or e}") from e
    if len(raw) > MAX_MODEL_SPEC_BYTES:
        raise InvalidInputError(f"model spec {path} is over {MAX_MODEL_SPEC_BYTES} bytes")
    try:
        obj = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise InvalidInputError(f"model spec {path} does not parse: {e}") from e
    return parse_model_spec(obj, f"model spec {path}")


def pin_model(weights: Path, name: str, model_version: str = "1", licence: str = "") -> ModelSpec:
    """The spec for a weights file: its SHA-256 and size, read in chunks."""
    h = hashlib.sha256()
    size = 0
    try:
        with weights.open("rb") as f:
            first = f.read(1)
            if first != ONNX_MAGIC_HINT:
                raise InvalidInputError(
                    f"{weights} does not look like an ONNX model (first byte "
                    f"{first.hex() or 'none'}, want 08)",
                    code="bad-model",
                )
            h.update(first)
            size = 1
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise InvalidInputError(f"cannot read {weights}: {e.strerror or e}") from e
    return parse_model_spec(
        {
            "name": name,
            "model_version": model_version,
            "sha256": h.hexdigest(),
            "size": size,
            "licence": licence,
        }
    )


def request_aad(spec_hash: bytes, keys_digest: bytes) -> bytes:
    return b"sealroom/model-request-aad/v1\0" + spec_hash + keys_digest


class RequestPlain(_Model):
    """The sealed request's plaintext."""

    inputs: dict[str, Any]  # NAME -> nested list, or {"dtype", "shape", "b64"} (raw, LE)
    encoding: Literal["json", "b64"] = "json"  # how the worker returns outputs
    reply_to: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    evidence_sha256: Sha256Hex


class AnswerStatement(_Model):
    """What the enclave signs for every answer (``signed_json`` payload)."""

    type: Literal["sealroom/model-answer/v1"] = "sealroom/model-answer/v1"
    model: str
    model_version: str
    model_sha256: Sha256Hex
    model_spec_hash: Sha256Hex
    keys_digest: Hex
    evidence_sha256: Sha256Hex
    request_sha256: Sha256Hex
    response_sha256: Sha256Hex
    answered_at: str


class AnswerPlain(BaseModel):
    """The sealed answer's plaintext."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    response_b64: str
    statement: dict[str, Any]  # signed_json document over an AnswerStatement
    # (kept as sent: the signature covers its exact payload)


def parse_answer_plain(raw: bytes) -> AnswerPlain:
    try:
        return AnswerPlain.model_validate_json(raw)
    except ValidationError as e:
        raise MalformedEvidenceError(f"model answer is malformed: {e.errors()[0]['msg']}") from e


def parse_statement(payload: dict[str, Any]) -> AnswerStatement:
    try:
        return AnswerStatement.model_validate(payload)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(statement)"
        raise MalformedEvidenceError(
            f"model answer statement: {field}: {first['msg']}", code="bad-statement"
        ) from e


def evidence_sha256(evidence: dict[str, Any]) -> bytes:
    """The digest of the evidence object a requester verified (key-sorted compact JSON:
    evidence carries integers beyond I-JSON, which RFC 8785 refuses)."""
    return hashlib.sha256(
        json.dumps(evidence, sort_keys=True, separators=(",", ":")).encode()
    ).digest()
