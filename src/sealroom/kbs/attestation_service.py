"""The attestation service: evidence in, EAR out over HTTP (ADR 0025).

- ``POST /api/v1/attestation/challenge`` → ``{"nonce": base64, "expires_at"}``: single-use
  nonces kept in the shared store, so any replica accepts a nonce once;
- ``POST /api/v1/attestation/verify`` ``{"evidence": <envelope object> | "evidence_b64",
  "kind"?, "nonce"?, "policy_id"}`` → ``{"ear", "status", "appraisal"}``; the EAR is ES256,
  signed by the service key, with ``eat_nonce`` when a nonce was used;
- ``GET /.well-known/jwks.json``: the service's public key (relying parties pin it);
- admin (bearer admin key): ``GET|PUT /api/v1/attestation/policies/<id>`` (sealroom
  policy text), ``GET|PUT /api/v1/attestation/reference-values/<name>`` (``{"value",
  "expires"}``, Trustee RVPS-like; an expired value fails its rule).

Errors are sealroom problem+json (ADR 0016). The same :class:`Verifier` runs in-process in
the key broker.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sealroom.attestation.evidence import EvidenceBundle, parse_envelope
from sealroom.attestation.policy import Policy
from sealroom.attestation.verifier import load_evidence
from sealroom.errors import (
    InvalidInputError,
    NotFoundError,
    SealroomError,
    UnauthenticatedError,
    to_problem,
)
from sealroom.kbs.server import KbsError, hash_admin_key, set_reference_values
from sealroom.kbs.store import Store
from sealroom.kbs.verify import Verifier, parse_policy

PREFIX = "/api/v1/attestation"
POLICY_DOC = "as-policy/"
NONCE_TTL = timedelta(minutes=5)
MAX_BODY = 16 * 1024 * 1024


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInputError(f"{what} is not base64: {e}") from e


def bundle_from_request(body: dict[str, Any]) -> EvidenceBundle:
    kind = body.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise InvalidInputError("kind must be a string")
    if "evidence" in body:
        ev = body["evidence"]
        if not isinstance(ev, dict):
            raise InvalidInputError("evidence must be a sealroom-evidence/v1 object")
        return parse_envelope(json.dumps(ev).encode())
    if "evidence_b64" in body:
        return load_evidence(_b64(body["evidence_b64"], "evidence_b64"), kind)
    raise InvalidInputError("give evidence (envelope object) or evidence_b64 (+ kind)")


def create_attestation_app(
    store: Store,
    verifier: Verifier,
    *,
    admin_key_hashes: Sequence[str],
) -> FastAPI:
    app = FastAPI(title="sealroom attestation service")
    add_attestation_routes(app, store, verifier, admin_key_hashes=admin_key_hashes)

    @app.get("/.well-known/jwks.json")
    async def jwks() -> JSONResponse:
        return JSONResponse(verifier.key.jwks())

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(status_code=200)

    return app


def add_attestation_routes(
    app: FastAPI,
    store: Store,
    verifier: Verifier,
    *,
    admin_key_hashes: Sequence[str],
) -> None:
    """The service's routes on ``app`` (the KBS serves them on its own port too)."""
    if not admin_key_hashes:
        raise ValueError("the attestation service needs at least one admin key")

    @app.exception_handler(SealroomError)
    async def _problem(_r: Request, e: SealroomError) -> JSONResponse:
        return JSONResponse(
            to_problem(e, e.http_status, type(e).__name__),
            status_code=e.http_status,
            media_type="application/problem+json",
        )

    def require_admin(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            got = hash_admin_key(token.strip())
            if any(hmac.compare_digest(got, h) for h in admin_key_hashes):
                return
        raise UnauthenticatedError("admin bearer key required", code="admin-key-required")

    async def body_json(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise InvalidInputError("request body too large", code="payload-too-large")
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidInputError(f"body is not JSON: {e}") from e
        if not isinstance(obj, dict):
            raise InvalidInputError("body must be a JSON object")
        return obj

    @app.post(f"{PREFIX}/challenge")
    async def challenge() -> JSONResponse:
        now = verifier.now()
        nonce = base64.b64encode(secrets.token_bytes(32)).decode()
        expires = now + NONCE_TTL
        store.add_nonce(nonce, expires)
        return JSONResponse({"nonce": nonce, "expires_at": expires.isoformat()})

    @app.post(f"{PREFIX}/verify")
    async def verify(request: Request) -> JSONResponse:
        body = await body_json(request)
        pid = body.get("policy_id")
        if not isinstance(pid, str):
            raise InvalidInputError("policy_id is required")
        bundle = bundle_from_request(body)
        now = verifier.now()
        nonce: bytes | None = None
        text_nonce: str | None = None
        if body.get("nonce") is not None:
            nonce = _b64(body["nonce"], "nonce")
            text_nonce = str(body["nonce"])
        # one transaction: the policy, the reference values and the nonce spent
        inputs = store.appraisal_inputs(POLICY_DOC + pid, now, nonce=text_nonce)
        if inputs.policy_text is None:
            raise NotFoundError(f"no policy {pid!r} on this service", code="policy-not-found")
        policy = parse_policy(inputs.policy_text, f"policy {pid}")
        if inputs.nonce_ok is False:
            raise UnauthenticatedError(
                "nonce was not issued by this service, has expired or was already used",
                code="nonce-invalid",
            )
        refs, expired = inputs.refs, inputs.expired_refs
        result = verifier.appraise(
            bundle, policy, now=now, nonce=nonce, refs=refs, expired_refs=expired
        )
        ear = verifier.ear(result, now=now, nonce=nonce)
        status = "affirming" if result.ok else "contraindicated"
        return JSONResponse(
            {"ear": ear, "ok": result.ok, "status": status, "appraisal": result.to_dict()}
        )

    @app.put(f"{PREFIX}/policies/{{pid}}")
    async def put_policy(request: Request, pid: str) -> Response:
        require_admin(request)
        text = (await request.body()).decode("utf-8", errors="strict")
        Policy.loads(text, source=f"policy {pid}")
        store.put_document(POLICY_DOC + pid, text, verifier.now())
        return Response(status_code=204)

    @app.get(f"{PREFIX}/policies/{{pid}}")
    async def get_policy(request: Request, pid: str) -> Response:
        require_admin(request)
        text = store.get_document(POLICY_DOC + pid)
        if text is None:
            raise NotFoundError(f"no policy {pid!r}", code="policy-not-found")
        return Response(text, media_type="application/yaml")

    @app.get(f"{PREFIX}/policies")
    async def list_policies(request: Request) -> JSONResponse:
        require_admin(request)
        return JSONResponse([n[len(POLICY_DOC) :] for n in store.list_documents(POLICY_DOC)])

    @app.put(f"{PREFIX}/reference-values/{{name}}")
    async def put_reference_value(request: Request, name: str) -> Response:
        require_admin(request)
        body = await body_json(request)
        try:
            set_reference_values(store, {**body, "name": name})
        except KbsError as e:  # restated in sealroom's error shape
            raise InvalidInputError(f"invalid reference value: {e.detail}") from e
        return Response(status_code=204)

    @app.get(f"{PREFIX}/reference-values/{{name}}")
    async def get_reference_value(request: Request, name: str) -> JSONResponse:
        require_admin(request)
        now = verifier.now()
        live = store.reference_values(now)
        if name not in live:
            raise NotFoundError(f"no live reference value {name!r}", code="reference-not-found")
        return JSONResponse(live[name])
