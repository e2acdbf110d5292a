"""The key broker: Trustee's KBS protocol (RCAR 0.4.0) over sealroom's verifier (ADR 0024).

Endpoints (Trustee ``kbs/src/api_server.rs``):

- ``POST /kbs/v0/auth`` → ``Challenge`` + cookie ``kbs-session-id`` (expires with the session)
- ``POST /kbs/v0/attest`` → ``{"token": EAR}`` (an attested session answers its old token)
- ``GET  /kbs/v0/resource/<repo>/<type>/<tag>`` → flattened JWE to the attested tee-pubkey;
  authorised by the session cookie, else by ``Authorization: Bearer <EAR>`` of this KBS
- admin (``Authorization: Bearer <admin key>``): ``POST|DELETE /kbs/v0/resource/...``,
  ``POST|GET /kbs/v0/resource-policy``, ``POST|GET /kbs/v0/attestation-policy``,
  ``POST|GET /kbs/v0/reference-value``, ``GET /kbs/v0/resources``

Every refusal is Trustee's ``{"type": ".../errors/<Variant>", "detail"}``, 401 except
``InvalidRequestPath``/``PluginNotFound`` (404).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import jwt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from sealroom.attestation.ear import verify_ear
from sealroom.attestation.policy import Policy
from sealroom.errors import SealroomError, to_problem
from sealroom.kbs import jwe as kbs_jwe
from sealroom.kbs.protocol import (
    DEFAULT_SESSION_MINUTES,
    NONCE_SIZE_BYTES,
    PROTOCOL_VERSION,
    SESSION_COOKIE,
    Attestation,
    ErrorVariant,
    JweResponse,
    KbsRequest,
    TeePubKey,
    error_body,
    hash_algorithm_for,
    runtime_data_digest,
)
from sealroom.kbs.resource_policy import ResourcePolicy, evaluate, parse_resource_policy
from sealroom.kbs.seams import (
    AuditEvent,
    AuditHook,
    ReleaseContext,
    ReleaseGuard,
    ReleaseRefused,
    ResourcePath,
    ResourceStore,
)
from sealroom.kbs.store import Session, SqlResourceStore, Store
from sealroom.kbs.verify import Verifier, bundle_from_tee_evidence, parse_policy

log = logging.getLogger(__name__)

RESOURCE_POLICY_DOC = "resource-policy"
ATTESTATION_POLICY_DOC = "attestation-policy/"
DEFAULT_POLICY_ID = "default"
_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(\+[0-9A-Za-z.-]+)?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


class KbsError(Exception):
    """A refusal answered in Trustee's error shape."""

    def __init__(self, variant: ErrorVariant, detail: str) -> None:
        super().__init__(detail)
        self.variant = variant
        self.detail = detail


def _attest_error(detail: str) -> KbsError:
    # Trustee: Error::AttestationError(attestation::Error::RcarAttestFailed{..}) -> 401
    return KbsError(ErrorVariant.ATTESTATION_ERROR, f"Attestation error: {detail}")


def hash_admin_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _b64url_text(value: str) -> str:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise KbsError(ErrorVariant.PARSE_POLICY_ERROR, f"Failed to decode policy: {e}") from e


def create_app(
    store: Store,
    verifier: Verifier,
    *,
    admin_key_hashes: Sequence[str],
    resource_store: ResourceStore | None = None,
    guards: Sequence[ReleaseGuard] = (),
    audit: Sequence[AuditHook] = (),
    session_minutes: int = DEFAULT_SESSION_MINUTES,
) -> FastAPI:
    """The KBS app. ``resource_store``, ``guards`` and ``audit`` are the key manager's seams
    (:mod:`sealroom.kbs.seams`); the default store keeps resources in ``store``."""
    if not admin_key_hashes:
        raise ValueError("a KBS needs at least one admin key")
    resources: ResourceStore = resource_store or SqlResourceStore(store)
    app = FastAPI(title="sealroom key broker (Trustee KBS protocol 0.4.0)")
    app.state.store = store
    app.state.verifier = verifier
    app.state.guards = list(guards)
    app.state.audit = list(audit)

    @app.exception_handler(KbsError)
    async def _kbs_error(_r: Request, e: KbsError) -> JSONResponse:
        return JSONResponse(error_body(e.variant, e.detail), status_code=e.variant.status)

    @app.exception_handler(SealroomError)
    async def _problem(_r: Request, e: SealroomError) -> JSONResponse:
        # only the attestation-service routes served alongside raise these (ADR 0025)
        return JSONResponse(
            to_problem(e, e.http_status, type(e).__name__),
            status_code=e.http_status,
            media_type="application/problem+json",
        )

    def jwks() -> dict[str, Any]:
        return verifier.key.jwks()

    def require_admin(request: Request, endpoint: str) -> None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token:
            got = hash_admin_key(token.strip())
            if any(hmac.compare_digest(got, h) for h in admin_key_hashes):
                return
        raise KbsError(
            ErrorVariant.ADMIN_AUTH,
            f"admin access denied for endpoint {endpoint}: no valid admin bearer key",
        )

    async def json_body(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise KbsError(ErrorVariant.SERDE_ERROR, "Serialize/Deserialize failed") from e

    # ------------------------------------------------------------------ RCAR
    @app.post("/kbs/v0/auth")
    async def auth(request: Request) -> JSONResponse:
        body = await json_body(request)
        try:
            req = KbsRequest.model_validate(body)
        except ValidationError as e:
            raise KbsError(
                ErrorVariant.ATTESTATION_ERROR,
                f"Attestation error: RCAR handshake Auth failed: deserialize Request: {e}",
            ) from e
        m = _VERSION.match(req.version)
        if m is None or m.group(0).split("+")[0] != PROTOCOL_VERSION:
            raise KbsError(
                ErrorVariant.ATTESTATION_ERROR,
                "Attestation error: RCAR handshake Auth failed: KBS Client Protocol Version "
                f"Mismatch: expect ={PROTOCOL_VERSION} while the request is {req.version}",
            )
        now = verifier.now()
        nonce = base64.b64encode(secrets.token_bytes(NONCE_SIZE_BYTES)).decode()
        sid = secrets.token_hex(16)
        expires = now + timedelta(minutes=session_minutes)
        store.add_session(Session(sid, req.tee, nonce, "", expires, None, None, None, None))
        resp = JSONResponse({"nonce": nonce, "extra-params": ""})
        _set_cookie(resp, sid, expires, now)
        return resp

    @app.post("/kbs/v0/attest")
    async def attest(request: Request) -> JSONResponse:
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid:
            raise _attest_error("RCAR handshake Attest failed: cookie not found")
        body = await json_body(request)
        try:
            att = Attestation.model_validate(body)
        except ValidationError as e:
            raise _attest_error(
                f"RCAR handshake Attest failed: deserialize Attestation: {e}"
            ) from e
        now = verifier.now()
        # one transaction: the session, the attestation policy and the reference values
        inputs = store.appraisal_inputs(
            ATTESTATION_POLICY_DOC + DEFAULT_POLICY_ID, now, session_id=sid
        )
        s = inputs.session
        if s is None:
            raise _attest_error("RCAR handshake Attest failed: session not found")
        if s.expires_at < now:
            store.delete_session(sid)
            raise _attest_error("RCAR handshake Attest failed: session expired.")
        if s.token is not None:
            resp = JSONResponse({"token": s.token})
            _set_cookie(resp, s.id, s.expires_at, now)
            return resp
        if att.runtime_data.nonce != s.nonce:
            raise _attest_error(
                "RCAR handshake Attest failed: the nonce in the handshake session is "
                "different from the client side in KBS protocol's Attestation message"
            )
        try:
            kbs_jwe.check_supported(att.runtime_data.tee_pubkey)
        except kbs_jwe.JweFailure as e:
            raise _attest_error(f"RCAR handshake Attest failed: tee-pubkey: {e}") from e
        if att.tee_evidence.additional_evidence not in ("", "{}"):
            raise _attest_error(
                "RCAR handshake Attest failed: additional (device) evidence is not supported "
                "by this KBS yet"
            )
        if inputs.policy_text is None:
            raise KbsError(
                ErrorVariant.POLICY_DENY,
                "Access denied by policy: no attestation policy is set (fail closed)",
            )
        digest = runtime_data_digest(
            s.nonce,
            att.runtime_data.tee_pubkey,
            att.tee_evidence.additional_evidence,
            hash_algorithm_for(s.tee),
        )
        try:
            policy = parse_policy(inputs.policy_text, "attestation-policy/default")
            bundle = bundle_from_tee_evidence(s.tee, att.tee_evidence.primary_evidence)
            result = verifier.appraise(
                bundle,
                policy,
                now=now,
                runtime_digest=digest,
                refs=inputs.refs,
                expired_refs=inputs.expired_refs,
            )
        except SealroomError as e:
            raise _attest_error(
                f"RCAR handshake Attest failed: verify TEE evidence failed: {e.code}: {e}"
            ) from e
        if not result.ok:
            bad = result.failures()
            raise _attest_error(
                f"RCAR handshake Attest failed: verify TEE evidence failed: policy "
                f"{result.policy_id!r}: {len(bad)} rule(s) failed: "
                + "; ".join(r.describe() for r in bad)
            )
        pub = att.runtime_data.tee_pubkey.members()
        claims = verifier.ear_claims(result, now=now, nonce=digest)
        claims["tee-pubkey"] = pub
        token = jwt.encode(
            claims,
            verifier.key.private_key,
            algorithm="ES256",
            headers={"typ": "JWT", "kid": verifier.key.kid},
        )
        if not store.attest_session(s.id, token, claims, pub, now):
            again = store.get_session(s.id)
            token = again.token if again is not None and again.token else token
        resp = JSONResponse({"token": token})
        _set_cookie(resp, s.id, s.expires_at, now)
        return resp

    # ------------------------------------------------------------------ resources
    def emit(event: AuditEvent) -> None:
        for hook in app.state.audit:
            hook(event)

    def token_claims(
        request: Request, session: Session | None
    ) -> tuple[dict[str, Any], Session | None]:
        s = session
        if s is not None and s.expires_at < verifier.now():
            store.delete_session(s.id)
            s = None
        token: str | None = s.token if s is not None else None
        if token is None:
            auth = request.headers.get("authorization", "")
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
        if token is None:
            raise KbsError(ErrorVariant.TOKEN_NOT_FOUND, "Attestation Token not found")
        try:
            tok = verify_ear(token, jwks(), now=verifier.now())
        except SealroomError as e:
            raise KbsError(ErrorVariant.TOKEN_VERIFIER_ERROR, f"Token Verifier error: {e}") from e
        return tok.claims, s

    @app.get("/kbs/v0/resource/{repo}/{rtype}/{tag}")
    async def get_resource(request: Request, repo: str, rtype: str, tag: str) -> JSONResponse:
        path = _path(repo, rtype, tag)
        # one transaction: the guest's session and the resource policy
        session, text = store.session_and_document(
            request.cookies.get(SESSION_COOKIE), RESOURCE_POLICY_DOC
        )
        claims, s = token_claims(request, session)
        now = verifier.now()
        sid = s.id if s is not None else None
        tee = s.tee if s is not None else None
        digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).hexdigest()

        def refuse(variant: ErrorVariant, reason: str, policy_id: str) -> KbsError:
            emit(AuditEvent("refused", str(path), sid, tee, reason, policy_id, now, digest))
            return KbsError(variant, reason)

        if text is None:
            raise refuse(
                ErrorVariant.POLICY_DENY, "Access denied by policy: no resource policy", ""
            )
        policy = parse_resource_policy(text)
        decision = evaluate(policy, str(path), claims)
        if not decision.allowed:
            raise refuse(
                ErrorVariant.POLICY_DENY,
                "Access denied by policy: " + "; ".join(decision.reasons),
                policy.id,
            )
        pub = claims.get("tee-pubkey")
        attested_at = datetime.fromtimestamp(int(claims.get("iat", 0)), tz=now.tzinfo)
        ctx = ReleaseContext(path, claims, sid or "", tee or "", attested_at, pub or {})
        for guard in app.state.guards:
            try:
                guard(ctx)
            except ReleaseRefused as e:
                raise refuse(
                    ErrorVariant.POLICY_DENY, f"Access denied by policy: {e}", policy.id
                ) from e
        value = resources.get(path)
        if value is None:
            # Trustee's resource plugin fails inside the plugin for a missing resource.
            raise refuse(
                ErrorVariant.PLUGIN_INTERNAL_ERROR,
                f"Plugin internal error: resource {path} not found",
                policy.id,
            )
        try:
            key = TeePubKey.model_validate(pub)
            response: JweResponse = kbs_jwe.encrypt(key, value)
        except (ValidationError, kbs_jwe.JweFailure) as e:
            raise refuse(ErrorVariant.JWE_ERROR, f"JWE failed: {e}", policy.id) from e
        emit(
            AuditEvent("released", str(path), sid, tee, decision.reasons[0], policy.id, now, digest)
        )
        return JSONResponse(response.model_dump(exclude_none=True))

    # ------------------------------------------------------------------ admin
    @app.post("/kbs/v0/resource/{repo}/{rtype}/{tag}")
    @app.put("/kbs/v0/resource/{repo}/{rtype}/{tag}")
    async def put_resource(request: Request, repo: str, rtype: str, tag: str) -> Response:
        require_admin(request, "resource")
        path = _path(repo, rtype, tag)
        try:
            resources.put(path, await request.body())
        except SealroomError as e:
            # a plugged-in store refusing the write (the KMS's kms/... keys): Trustee's
            # plugin failure, not a 500
            raise KbsError(ErrorVariant.PLUGIN_INTERNAL_ERROR, f"{e.code}: {e.message}") from e
        return Response(status_code=200)

    @app.delete("/kbs/v0/resource/{repo}/{rtype}/{tag}")
    async def delete_resource(request: Request, repo: str, rtype: str, tag: str) -> Response:
        require_admin(request, "resource")
        path = _path(repo, rtype, tag)
        try:
            deleted = resources.delete(path)
        except SealroomError as e:
            raise KbsError(ErrorVariant.PLUGIN_INTERNAL_ERROR, f"{e.code}: {e.message}") from e
        if not deleted:
            raise KbsError(ErrorVariant.INVALID_REQUEST_PATH, f"Request path {path} is invalid")
        return Response(status_code=200)

    @app.get("/kbs/v0/resources")
    async def list_resources(request: Request) -> JSONResponse:
        require_admin(request, "resources")
        return JSONResponse([str(p) for p in resources.list()])

    @app.post("/kbs/v0/resource-policy")
    async def set_resource_policy(request: Request) -> Response:
        require_admin(request, "resource-policy")
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("policy"), str):
            raise KbsError(
                ErrorVariant.PARSE_POLICY_ERROR,
                "Failed to parse policy: `policy` field is not a string in SetPolicy Request Json",
            )
        text = _b64url_text(body["policy"])
        if "package policy" in text:
            raise KbsError(
                ErrorVariant.PARSE_POLICY_ERROR,
                "Failed to parse policy: Rego policies need a Rego evaluator (regorus), which "
                "is not installed here; write the policy in sealroom's resource policy format",
            )
        try:
            policy = ResourcePolicy.parse(text)
        except SealroomError as e:
            raise KbsError(ErrorVariant.PARSE_POLICY_ERROR, f"Failed to parse policy: {e}") from e
        store.put_document(RESOURCE_POLICY_DOC, policy.to_json(), verifier.now())
        return Response(status_code=200)

    @app.get("/kbs/v0/resource-policy")
    async def get_resource_policy(request: Request) -> JSONResponse:
        require_admin(request, "resource-policy")
        text = store.get_document(RESOURCE_POLICY_DOC)
        return JSONResponse(json.loads(text) if text else None)

    @app.post("/kbs/v0/attestation-policy")
    async def set_attestation_policy(request: Request) -> Response:
        require_admin(request, "attestation-policy")
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("policy"), str):
            raise KbsError(ErrorVariant.SERDE_ERROR, "Serialize/Deserialize failed")
        ptype = body.get("type", "sealroom")
        if ptype != "sealroom":
            raise KbsError(
                ErrorVariant.PARSE_POLICY_ERROR,
                f"Failed to parse policy: type {ptype!r}; this KBS appraises with sealroom "
                "policies (type: sealroom)",
            )
        pid = body.get("policy_id", DEFAULT_POLICY_ID)
        if not isinstance(pid, str) or not _SEGMENT.match(pid):
            raise KbsError(ErrorVariant.PARSE_POLICY_ERROR, f"invalid policy_id {pid!r}")
        text = _b64url_text(body["policy"])
        try:
            Policy.loads(text, source=f"attestation-policy/{pid}")
        except SealroomError as e:
            raise KbsError(ErrorVariant.PARSE_POLICY_ERROR, f"Failed to parse policy: {e}") from e
        store.put_document(ATTESTATION_POLICY_DOC + pid, text, verifier.now())
        return Response(status_code=200)

    @app.get("/kbs/v0/attestation-policy")
    async def get_attestation_policy(
        request: Request, policy_id: str = DEFAULT_POLICY_ID
    ) -> JSONResponse:
        require_admin(request, "attestation-policy")
        return JSONResponse(
            {
                "policy_id": policy_id,
                "policy": store.get_document(ATTESTATION_POLICY_DOC + policy_id),
            }
        )

    @app.post("/kbs/v0/reference-value")
    async def set_reference_value(request: Request) -> Response:
        require_admin(request, "reference-value")
        body = await json_body(request)
        set_reference_values(store, body)
        return Response(status_code=200)

    @app.get("/kbs/v0/reference-value/{name:path}")
    async def get_reference_value(request: Request, name: str) -> JSONResponse:
        require_admin(request, "reference-value")
        refs, _ = _refs(store, verifier.now())
        if name not in refs:
            raise KbsError(
                ErrorVariant.INVALID_REQUEST_PATH,
                f"No reference value found for the given id: {name}",
            )
        return JSONResponse(refs[name])

    @app.get("/.well-known/jwks.json")
    async def get_jwks() -> JSONResponse:
        return JSONResponse(jwks())

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(status_code=200)

    return app


def set_reference_values(store: Store, body: Any) -> None:
    """``{"<kind>.<claim path>": {"allowed": [...]} | {"min": n}, "expires": ISO8601?}`` or
    a list of ``{"name", "value", "expires"}``."""
    items = body if isinstance(body, list) else [body]
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise KbsError(ErrorVariant.SERDE_ERROR, "reference value needs a string name")
        expires: datetime | None = None
        if item.get("expires") is not None:
            try:
                expires = datetime.fromisoformat(str(item["expires"]).replace("Z", "+00:00"))
            except ValueError as e:
                raise KbsError(ErrorVariant.SERDE_ERROR, f"expires is not ISO 8601: {e}") from e
            if expires.tzinfo is None:
                raise KbsError(ErrorVariant.SERDE_ERROR, "expires needs a time zone")
        store.put_reference_value(item["name"], item.get("value"), expires)


def _refs(store: Store, now: datetime) -> tuple[dict[str, Any], dict[str, datetime]]:
    return store.reference_values(now), store.expired_reference_values(now)


def _path(repo: str, rtype: str, tag: str) -> ResourcePath:
    for seg in (repo, rtype, tag):
        if not _SEGMENT.match(seg):
            raise KbsError(
                ErrorVariant.INVALID_REQUEST_PATH, f"Request path {repo}/{rtype}/{tag} is invalid"
            )
    return ResourcePath(repo, rtype, tag)


def _set_cookie(resp: Response, sid: str, expires: datetime, now: datetime) -> None:
    """``Expires`` as Trustee sends it, plus ``Max-Age`` (which RFC 6265 makes win): the
    lifetime then does not depend on the guest's clock agreeing with ours."""
    max_age = max(0, int((expires - now).total_seconds()))
    resp.set_cookie(
        SESSION_COOKIE, sid, expires=expires, max_age=max_age, httponly=True, samesite="strict"
    )
