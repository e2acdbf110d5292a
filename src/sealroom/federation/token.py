"""Federation tokens: a site's evidence, bound to who it is, where it talks, and when.

A token is the canonical JSON (RFC 8785) of ``{"binding", "evidence", "ear"}``, base64url
without padding. The binding says:

- ``federation`` / ``job``: the federation (NVFlare: the project) and job it is for;
- ``site``: the site's name; ``channel_key``: SHA-256 of the DER SubjectPublicKeyInfo of
  the key the site speaks with (its TLS certificate or the federation signing key);
- ``freshness``: a challenge the verifier issued (``{"kind": "challenge", "value": hex}``)
  or a time-windowed beacon (``{"kind": "beacon", "value": "<seconds>:<window index>"}``);
- ``token_id`` (random), ``issued_at``, ``expires_at`` (Unix seconds).

Every piece of CPU evidence in the token carries, as REPORT_DATA,

    SHA-512("sealroom/federation-token/v1\\0" || canonical_json(binding))

so the hardware signs the binding: a token cannot be moved to another site, job, channel
key or time window without new evidence from a TEE that the verifier's policy accepts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem, parse_envelope
from sealroom.crypto.canonical import canonical_json
from sealroom.errors import InvalidInputError, MalformedEvidenceError

FORMAT = "sealroom-federation-token/v1"
DOMAIN = b"sealroom/federation-token/v1\0"
#: Largest token accepted before parsing (evidence of a CPU + GPUs fits well below).
MAX_TOKEN = 512 * 1024
_HEX = re.compile(r"^[0-9a-f]+$")
_NAME = re.compile(r"^[A-Za-z0-9@._:*-]{1,128}$")

FreshnessKind = Literal["challenge", "beacon"]


@dataclass(frozen=True)
class Freshness:
    kind: FreshnessKind
    value: str

    @staticmethod
    def challenge(nonce: bytes) -> Freshness:
        if not 16 <= len(nonce) <= 64:
            raise ValueError("a challenge is 16 to 64 bytes")
        return Freshness("challenge", nonce.hex())

    @staticmethod
    def beacon(now_unix: int, window_seconds: int) -> Freshness:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        return Freshness("beacon", f"{window_seconds}:{now_unix // window_seconds}")


@dataclass(frozen=True)
class Binding:
    federation: str
    job: str
    site: str
    channel_key: str
    freshness: Freshness
    token_id: str
    issued_at: int
    expires_at: int

    def __post_init__(self) -> None:
        for name in ("federation", "job", "site"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _NAME.match(value):
                raise InvalidInputError(
                    f"token binding {name} is {value!r}; expected 1-128 of [A-Za-z0-9@._:*-]",
                    code="federation-token-malformed",
                )
        if not (len(self.channel_key) == 64 and _HEX.match(self.channel_key)):
            raise InvalidInputError(
                "token binding channel_key must be 64 lowercase hex digits (SHA-256)",
                code="federation-token-malformed",
            )
        if not (len(self.token_id) == 32 and _HEX.match(self.token_id)):
            raise InvalidInputError(
                "token binding token_id must be 32 lowercase hex digits",
                code="federation-token-malformed",
            )
        if self.freshness.kind not in ("challenge", "beacon"):
            raise InvalidInputError(
                f"token freshness kind {self.freshness.kind!r} is not challenge or beacon",
                code="federation-token-malformed",
            )
        if self.expires_at <= self.issued_at:
            raise InvalidInputError(
                "token expires_at must be after issued_at", code="federation-token-malformed"
            )

    def to_obj(self) -> dict[str, Any]:
        return asdict(self)

    def report_data(self) -> bytes:
        """The 64 bytes every CPU evidence item of the token carries as REPORT_DATA."""
        return hashlib.sha512(DOMAIN + canonical_json(self.to_obj())).digest()


def new_token_id() -> str:
    return secrets.token_hex(16)


def channel_key_digest(material: bytes | x509.Certificate) -> str:
    """SHA-256 (hex) of the DER SubjectPublicKeyInfo of a certificate or public key (PEM/DER)."""
    if isinstance(material, x509.Certificate):
        spki = material.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(spki).hexdigest()
    for cload in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
        try:
            return channel_key_digest(cload(material))
        except ValueError:
            continue
    for kload in (serialization.load_pem_public_key, serialization.load_der_public_key):
        try:
            key = kload(material)
        except (ValueError, TypeError):
            continue
        return hashlib.sha256(
            key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).hexdigest()
    raise InvalidInputError(
        "channel key is neither a certificate nor a public key (PEM or DER)",
        code="federation-channel-key-malformed",
    )


@dataclass(frozen=True)
class FederationToken:
    binding: Binding
    evidence: EvidenceBundle
    ear: str | None = None
    #: The site's channel certificate (PEM), where the verifier checks it against its roots
    #: (NVFlare: the startup-kit certificate); its key must be ``binding.channel_key``.
    certificate: str | None = None

    def encode(self) -> str:
        obj: dict[str, Any] = {
            "format": FORMAT,
            "binding": self.binding.to_obj(),
            "evidence": json.loads(self.evidence.to_json()),
        }
        if self.ear is not None:
            obj["ear"] = self.ear
        if self.certificate is not None:
            obj["certificate"] = self.certificate
        return base64.urlsafe_b64encode(canonical_json(obj)).rstrip(b"=").decode()

    @staticmethod
    def decode(text: str | bytes) -> FederationToken:
        raw = text.encode() if isinstance(text, str) else bytes(text)
        if len(raw) > MAX_TOKEN:
            raise MalformedEvidenceError(
                f"federation token is {len(raw)} bytes, at most {MAX_TOKEN}",
                code="federation-token-malformed",
            )
        try:
            data = base64.urlsafe_b64decode(raw.strip() + b"=" * (-len(raw.strip()) % 4))
            obj = json.loads(data)
        except (binascii.Error, ValueError) as e:
            raise MalformedEvidenceError(
                f"federation token is not base64url JSON: {e}", code="federation-token-malformed"
            ) from e
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise MalformedEvidenceError(
                f"federation token format is not {FORMAT}", code="federation-token-malformed"
            )
        extra = sorted(set(obj) - {"format", "binding", "evidence", "ear", "certificate"})
        if extra:
            raise MalformedEvidenceError(
                f"federation token has unknown members {extra}", code="federation-token-malformed"
            )
        b = obj.get("binding")
        if not isinstance(b, dict):
            raise MalformedEvidenceError(
                "federation token has no binding", code="federation-token-malformed"
            )
        try:
            fr = b["freshness"]
            binding = Binding(
                federation=_str(b["federation"]),
                job=_str(b["job"]),
                site=_str(b["site"]),
                channel_key=_str(b["channel_key"]),
                freshness=Freshness(_str(fr["kind"]), _str(fr["value"])),  # type: ignore[arg-type]
                token_id=_str(b["token_id"]),
                issued_at=_int(b["issued_at"]),
                expires_at=_int(b["expires_at"]),
            )
        except (KeyError, TypeError) as e:
            raise MalformedEvidenceError(
                f"federation token binding is incomplete: {e}", code="federation-token-malformed"
            ) from e
        if len(b) != 8:
            raise MalformedEvidenceError(
                "federation token binding has unknown members", code="federation-token-malformed"
            )
        evidence = parse_envelope(json.dumps(obj.get("evidence")).encode())
        ear = obj.get("ear")
        cert = obj.get("certificate")
        if ear is not None and not isinstance(ear, str):
            raise MalformedEvidenceError(
                "token ear must be a string", code="federation-token-malformed"
            )
        if cert is not None and not isinstance(cert, str):
            raise MalformedEvidenceError(
                "token certificate must be a PEM string", code="federation-token-malformed"
            )
        return FederationToken(binding, evidence, ear, cert)


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _int(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"expected an integer, got {type(v).__name__}")
    return v


def make_token(
    binding: Binding,
    items: list[EvidenceItem],
    *,
    ear: str | None = None,
    certificate: str | None = None,
) -> FederationToken:
    """A token from evidence already collected with ``binding.report_data()``."""
    if not items:
        raise ValueError("a token needs at least one evidence item")
    return FederationToken(binding, EvidenceBundle(tuple(items)), ear, certificate)
