"""Trustee's KBS attestation protocol (RCAR, version 0.4.0): the wire contract, defined once.

Imported by the server (:mod:`sealroom.kbs.server`) and the guest client
(:mod:`sealroom.kbs.client`); nothing here imports a web framework or a database. Every
member name, the cookie, the error shape and the report-data binding follow Trustee's
sources (commits and files in ADR 0024):

- payload models: ``kbs-types`` ``src/lib.rs`` (``Request``, ``Challenge``,
  ``RuntimeData``, ``TeePubKey``, ``CompositeEvidence``, ``Attestation``,
  ``ProtectedHeader``, ``Response``, ``ErrorInformation``);
- version check and session: ``kbs/src/attestation/backend.rs`` (``VERSION_REQ`` is
  ``=0.4.0``; 32 random bytes base64 nonce; ``extra-params`` is ``""``) and ``session.rs``
  (cookie ``kbs-session-id``, expiry ``timeout`` minutes, default 5);
- binding: the KBS hands the attestation service the runtime data
  ``{"tee-pubkey", "nonce", "additional-evidence"}`` (the *session's* nonce and the typed
  public key, so extra JWK members are dropped); the service hashes its RFC 8785 form with
  SHA-384 (``coco/builtin.rs``; SHA-512 for ``se``) and the SNP/TDX verifiers compare
  REPORT_DATA with the digest zero-padded or truncated to 64 bytes
  (``deps/verifier`` ``regularize_data``). guest-components ``rcar_client.rs`` computes the
  same digest on the guest side.
- errors: ``kbs/src/error.rs`` (type prefix, 404 for ``InvalidRequestPath`` and
  ``PluginNotFound``, 401 for everything else).
"""

from __future__ import annotations

import base64
import enum
import hashlib
from typing import Any, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The one protocol version this KBS speaks (Trustee ``VERSION_REQ = "=0.4.0"``).
PROTOCOL_VERSION = "0.4.0"
#: URL prefix of every KBS endpoint.
KBS_PREFIX = "/kbs/v0"
#: Session cookie name (Trustee ``KBS_SESSION_ID``).
SESSION_COOKIE = "kbs-session-id"
#: Default session lifetime in minutes (Trustee ``DEFAULT_TIMEOUT``).
DEFAULT_SESSION_MINUTES = 5
#: Nonce size in bytes before base64 (Trustee ``NONCE_SIZE_BYTES``).
NONCE_SIZE_BYTES = 32
#: Error ``type`` prefix (Trustee ``ERROR_TYPE_PREFIX``).
ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors"
#: REPORT_DATA size of the kinds Trustee regularizes to 64 bytes.
REPORT_DATA_SIZE = 64

#: TEE names of ``kbs-types`` ``Tee`` (serde names).
TEE_NAMES = (
    "az-snp-vtpm",
    "az-tdx-vtpm",
    "nvidia",
    "sgx",
    "snp",
    "tdx",
    "cca",
    "csv",
    "se",
    "hygondcu",
    "tpm",
    "sample",
    "sampledevice",
)

RSA_OAEP_256 = "RSA-OAEP-256"
ECDH_ES_A256KW = "ECDH-ES+A256KW"
A256GCM = "A256GCM"
P256 = "P-256"
P521 = "P-521"


class ErrorVariant(enum.StrEnum):
    """Trustee ``kbs/src/error.rs`` variants a KBS answers with (the ``type`` suffix)."""

    ADMIN_AUTH = "AdminAuthAccess"
    ATTESTATION_ERROR = "AttestationError"
    INVALID_REQUEST_PATH = "InvalidRequestPath"
    JWE_ERROR = "JweError"
    PLUGIN_NOT_FOUND = "PluginNotFound"
    PLUGIN_INTERNAL_ERROR = "PluginInternalError"
    POLICY_DENY = "PolicyDeny"
    PARSE_POLICY_ERROR = "ParsePolicyError"
    SERDE_ERROR = "SerdeError"
    TOKEN_NOT_FOUND = "TokenNotFound"  # noqa: S105 - an error name, not a secret
    TOKEN_VERIFIER_ERROR = "TokenVerifierError"  # noqa: S105 - an error name

    @property
    def status(self) -> int:
        # error.rs error_response: 404 for these two, 401 for everything else.
        if self in (ErrorVariant.INVALID_REQUEST_PATH, ErrorVariant.PLUGIN_NOT_FOUND):
            return 404
        return 401


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class KbsRequest(_Wire):
    """``Request``: the first message (``POST /kbs/v0/auth``)."""

    version: str
    tee: str
    extra_params: Any = Field(default="", alias="extra-params")


class Challenge(_Wire):
    """``Challenge``: the answer to ``auth``."""

    nonce: str
    extra_params: Any = Field(default="", alias="extra-params")


class TeePubKey(_Wire):
    """``TeePubKey``: RSA (``n``, ``e``) or EC (``crv``, ``x``, ``y``), tagged by ``kty``.

    Only these members are kept (serde drops unknown JWK members), which matters: the
    KBS recomputes the binding digest from this typed form, not from the bytes sent."""

    kty: Literal["RSA", "EC"]
    alg: str
    n: str | None = None
    e: str | None = None
    crv: str | None = None
    x: str | None = None
    y: str | None = None

    @field_validator("n", "e", "x", "y")
    @classmethod
    def _b64url(cls, v: str | None) -> str | None:
        if v is not None:
            b64url_decode(v)
        return v

    def members(self) -> dict[str, str]:
        """The JSON object Trustee serializes for this key (tag first, as serde does)."""
        if self.kty == "RSA":
            if self.n is None or self.e is None:
                raise ValueError("RSA tee-pubkey needs n and e")
            return {"kty": "RSA", "alg": self.alg, "n": self.n, "e": self.e}
        if self.crv is None or self.x is None or self.y is None:
            raise ValueError("EC tee-pubkey needs crv, x and y")
        return {"kty": "EC", "crv": self.crv, "alg": self.alg, "x": self.x, "y": self.y}


class RuntimeData(_Wire):
    nonce: str
    tee_pubkey: TeePubKey = Field(alias="tee-pubkey")


class CompositeEvidence(_Wire):
    primary_evidence: Any
    additional_evidence: str = ""


class InitData(_Wire):
    format: str
    body: str


class Attestation(_Wire):
    """``Attestation``: the second message (``POST /kbs/v0/attest``)."""

    init_data: InitData | None = Field(default=None, alias="init-data")
    runtime_data: RuntimeData = Field(alias="runtime-data")
    tee_evidence: CompositeEvidence = Field(alias="tee-evidence")


class AttestationToken(_Wire):
    token: str


class JweResponse(_Wire):
    """``Response``: a flattened JWE (RFC 7516 §7.2.2); ``aad`` is never set by Trustee."""

    protected: str
    encrypted_key: str
    iv: str
    ciphertext: str
    tag: str
    aad: str | None = None


class ErrorInformation(_Wire):
    type: str
    detail: str


def error_body(variant: ErrorVariant, detail: str) -> dict[str, str]:
    return {"type": f"{ERROR_TYPE_PREFIX}/{variant.value}", "detail": detail}


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    if "=" in text:
        raise ValueError("base64url without padding expected")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


HASH_ALGORITHMS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def hash_algorithm_for(tee: str) -> str:
    """Trustee's built-in AS: SHA-512 for IBM SE, SHA-384 for every other TEE."""
    return "sha512" if tee == "se" else "sha384"


def runtime_data_json(
    nonce: str, tee_pubkey: TeePubKey, additional_evidence: str
) -> dict[str, Any]:
    """The runtime data the KBS binds for the primary evidence (backend.rs
    ``primary_runtime_data``; guest-components ``primary_runtime_data_json``)."""
    return {
        "tee-pubkey": tee_pubkey.members(),
        "nonce": nonce,
        "additional-evidence": additional_evidence,
    }


def runtime_data_digest(
    nonce: str, tee_pubkey: TeePubKey, additional_evidence: str = "", algorithm: str = "sha384"
) -> bytes:
    """Hash of the RFC 8785 form of :func:`runtime_data_json`."""
    doc = runtime_data_json(nonce, tee_pubkey, additional_evidence)
    return HASH_ALGORITHMS[algorithm](rfc8785.dumps(doc)).digest()


def regularize(data: bytes, size: int = REPORT_DATA_SIZE) -> bytes:
    """``regularize_data``: zero-pad or truncate to ``size`` bytes."""
    return data[:size] + bytes(max(0, size - len(data)))


def report_data_for(tee: str, runtime_digest: bytes) -> bytes:
    """What a guest puts in its REPORT_DATA for ``tee`` (64-byte field kinds)."""
    return regularize(runtime_digest, REPORT_DATA_SIZE)


def resource_path(repo: str, rtype: str, tag: str) -> str:
    return f"{repo}/{rtype}/{tag}"
