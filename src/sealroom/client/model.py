"""Client of a model-serving enclave (docs/adr/0040): verify the enclave (your policy,
the model spec hash it binds), then send inputs sealed to its attested X25519 key and
check every answer: opened with your key, signed by the attested enclave key over the
request, the response, the model's hash and the evidence you verified.

``verify_answer_file`` checks a saved answer offline, with no network: the evidence in it
against your policy and model spec, the enclave's signature, and the hashes of the
request and response it holds.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict, ValidationError

from sealroom.attestation.appraise import AppraisalResult
from sealroom.attestation.collateral import CollateralSource, NoCollateral
from sealroom.attestation.policy import Policy
from sealroom.client.enclave import PinnedHTTPSConnection
from sealroom.client.service import ServiceClient, appraise_bound_evidence
from sealroom.crypto.sealing import open_bytes, seal_bytes
from sealroom.crypto.signing import verify_signed_json
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    MalformedEvidenceError,
    SealroomError,
    UnavailableError,
    error_from_problem,
)
from sealroom.protocol.enclave import EnclavePublicKeys
from sealroom.protocol.model import (
    ANSWER_DOMAIN,
    ANSWER_INFO,
    INFER_PATH,
    MODEL_DOMAIN,
    REQUEST_INFO,
    AnswerStatement,
    ModelSpec,
    RequestPlain,
    evidence_sha256,
    model_spec_hash,
    parse_answer_plain,
    parse_statement,
    request_aad,
)

BUNDLE_TYPE = "sealroom/model-answer-bundle/v1"
TensorEncoding = Literal["json", "b64"]
MAX_ANSWER_BYTES = 64 << 20


@dataclass(frozen=True)
class VerifiedAnswer:
    statement: AnswerStatement
    response: dict[str, Any]  # {"outputs": ...} or {"error": ...}
    appraisal: AppraisalResult

    @property
    def simulated(self) -> bool:
        return any(s.claims.simulated for s in self.appraisal.submods)


class _Attestation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    evidence: dict[str, Any]
    enclave_keys: dict[str, str]
    nonce: str
    model: dict[str, Any]


class AnswerBundle(BaseModel):
    """What ``sealroom model infer --answer FILE`` keeps: the request and response in
    clear (the file is the requester's, 0600), the enclave's signed statement and the
    evidence the requester verified."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: str = BUNDLE_TYPE
    request_b64: str
    response_b64: str
    statement: dict[str, Any]
    attestation: _Attestation


def parse_bundle(raw: bytes) -> AnswerBundle:
    try:
        bundle = AnswerBundle.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(bundle)"
        raise MalformedEvidenceError(f"model answer file: {field}: {first['msg']}") from e
    if bundle.type != BUNDLE_TYPE:
        raise MalformedEvidenceError(f"model answer file: type is {bundle.type!r}")
    return bundle


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as e:
        raise MalformedEvidenceError(f"model answer: {what} is not base64") from e


def check_statement(
    doc: dict[str, Any],
    *,
    keys: EnclavePublicKeys,
    model: ModelSpec,
    evidence: dict[str, Any],
    request: bytes,
    response: bytes,
) -> AnswerStatement:
    """The enclave's signature (its attested Ed25519 key) and every field it signs."""
    st = parse_statement(verify_signed_json(doc, keys.ed25519_key(), ANSWER_DOMAIN))
    want = {
        "keys_digest": keys.digest.hex(),
        "model_spec_hash": model.spec_hash.hex(),
        "model_sha256": model.sha256,
        "evidence_sha256": evidence_sha256(evidence).hex(),
        "request_sha256": hashlib.sha256(request).hexdigest(),
        "response_sha256": hashlib.sha256(response).hexdigest(),
    }
    for field, value in want.items():
        got = getattr(st, field)
        if got != value:
            raise AttestationError(
                f"model answer: the signed {field} is {got}, the answer's is {value}",
                code="answer-mismatch",
            )
    return st


def _response_obj(response: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(response)
    except ValueError as e:
        raise MalformedEvidenceError("model response is not JSON") from e
    if not isinstance(obj, dict):
        raise MalformedEvidenceError("model response is not an object")
    return obj


def verify_answer_file(
    raw: bytes,
    policy: Policy,
    model: ModelSpec,
    *,
    extra_roots: tuple[x509.Certificate, ...] = (),
    collateral: CollateralSource | None = None,
    now: datetime | None = None,
) -> VerifiedAnswer:
    """Offline: the evidence (your policy; it binds your model spec and the keys), the
    enclave's signature over this request and response. Raises unless all pass."""
    b = parse_bundle(raw)
    att = b.attestation
    keys = EnclavePublicKeys.from_json_obj(att.enclave_keys)
    claimed = model_spec_hash(att.model)
    if claimed != model.spec_hash:
        raise AttestationError(
            f"the answer is from an enclave serving model spec {claimed.hex()}, not yours "
            f"({model.spec_hash.hex()})",
            code="spec-mismatch",
        )
    try:
        nonce = bytes.fromhex(att.nonce)
    except ValueError as e:
        raise MalformedEvidenceError("model answer file: nonce is not hex") from e
    appraisal = appraise_bound_evidence(
        att.evidence,
        keys,
        claimed,
        nonce,
        policy,
        now=now or datetime.now(UTC),
        collateral=collateral or NoCollateral(),
        extra_roots=extra_roots,
    )
    appraisal.require_ok()
    request = _b64(b.request_b64, "request_b64")
    response = _b64(b.response_b64, "response_b64")
    st = check_statement(
        b.statement,
        keys=keys,
        model=model,
        evidence=att.evidence,
        request=request,
        response=response,
    )
    return VerifiedAnswer(st, _response_obj(response), appraisal)


@dataclass(frozen=True)
class ModelAnswer:
    response: dict[str, Any]
    statement: AnswerStatement
    bundle: AnswerBundle

    def bundle_bytes(self) -> bytes:
        return self.bundle.model_dump_json(indent=1).encode() + b"\n"


class ModelClient(ServiceClient):
    spec_domain = MODEL_DOMAIN

    def __init__(
        self,
        url: str,
        policy: Policy,
        model: ModelSpec,
        *,
        extra_roots: tuple[x509.Certificate, ...] = (),
        collateral: CollateralSource | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        timeout: float = 120.0,
    ) -> None:
        super().__init__(
            url,
            policy,
            extra_roots=extra_roots,
            collateral=collateral,
            clock=clock,
            timeout=timeout,
            expected_hash=model.spec_hash,
        )
        self.model = model
        self._conn: PinnedHTTPSConnection | None = None

    def seal_request(
        self, inputs: dict[str, Any], reply_key: X25519PrivateKey, encoding: TensorEncoding = "json"
    ) -> tuple[bytes, bytes]:
        """(request plaintext, sealed request) for the attested enclave."""
        if self.attested is None or not self.attested.appraisal.ok:
            self.attest()
        assert self.attested is not None
        reply_pub = reply_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        plain = (
            RequestPlain(
                inputs=inputs,
                encoding=encoding,
                reply_to=reply_pub.hex(),
                evidence_sha256=evidence_sha256(self.attested.evidence).hex(),
            )
            .model_dump_json()
            .encode()
        )
        keys = self.attested.keys
        sealed = seal_bytes(
            plain,
            X25519PublicKey.from_public_bytes(keys.x25519),
            info=REQUEST_INFO,
            aad=request_aad(self.attested.spec_hash, keys.digest),
        )
        return plain, sealed

    def post_sealed(self, sealed: bytes) -> bytes:
        """POST a sealed request; a kept-alive connection pinned to the attested key."""
        assert self.attested is not None
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = self._connection(self.attested.keys.tls_spki)
            try:
                self._conn.request(
                    "POST",
                    INFER_PATH,
                    body=sealed,
                    headers={"Content-Type": "application/octet-stream"},
                )
                resp = self._conn.getresponse()
                body = resp.read(MAX_ANSWER_BYTES + 1)
            except SealroomError:
                self.close()
                raise
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if attempt == 0:
                    continue  # the server closed a kept-alive connection: once more
                raise UnavailableError(f"model server at {self.url} unreachable: {e}") from e
            if resp.status != 200:
                self.close()
                raise error_from_problem(
                    resp.status,
                    body,
                    resp.getheader("content-type") or "",
                    prefix=f"model server answered {resp.status}: ",
                )
            if len(body) > MAX_ANSWER_BYTES:
                self.close()
                raise UnavailableError("model answer is too large", code="bad-response")
            return body
        raise AssertionError("unreachable")

    def open_answer(
        self, plain: bytes, sealed: bytes, answer: bytes, reply_key: X25519PrivateKey
    ) -> ModelAnswer:
        assert self.attested is not None
        try:
            opened = open_bytes(
                answer, reply_key, info=ANSWER_INFO, aad=hashlib.sha256(sealed).digest()
            )
        except SealroomError as e:
            raise AttestationError(
                "the model answer does not open with your key for this request",
                code="answer-not-for-you",
            ) from e
        a = parse_answer_plain(opened)
        response = _b64(a.response_b64, "response_b64")
        st = check_statement(
            a.statement,
            keys=self.attested.keys,
            model=self.model,
            evidence=self.attested.evidence,
            request=plain,
            response=response,
        )
        bundle = AnswerBundle(
            request_b64=base64.b64encode(plain).decode(),
            response_b64=a.response_b64,
            statement=a.statement,
            attestation=_Attestation(
                evidence=self.attested.evidence,
                enclave_keys=self.attested.keys.to_json_obj(),
                nonce=self.attested.nonce.hex(),
                model=self.attested.measured_spec,
            ),
        )
        return ModelAnswer(_response_obj(response), st, bundle)

    def infer(
        self, inputs: dict[str, Any], reply_key: X25519PrivateKey, encoding: TensorEncoding = "json"
    ) -> ModelAnswer:
        """Seal, send, open, check. ``reply_key`` receives the answer (a party's X25519
        key, or a fresh one per request). ``encoding="b64"``: numeric outputs come back
        as raw tensors ``{"dtype", "shape", "b64"}`` (inputs may be raw tensors too)."""
        if not isinstance(inputs, dict) or not inputs:
            raise InvalidInputError("inputs must be an object {NAME: tensor as nested lists}")
        plain, sealed = self.seal_request(inputs, reply_key, encoding)
        return self.open_answer(plain, sealed, self.post_sealed(sealed), reply_key)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
