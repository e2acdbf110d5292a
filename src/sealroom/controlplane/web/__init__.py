"""The dashboard: server-rendered pages under ``/ui`` (docs/adr/0036).

The same accounts, keys and authorization as the API: a login turns an API key into a
session cookie (HttpOnly, SameSite=Strict, Secure over TLS); every page calls the same
services with the same ``Principal``, so an account sees exactly what its key sees through
the API. Every state-changing form carries the session's CSRF token. Assets (CSS, the
small script, the Swagger UI and ReDoc bundles for ``/docs`` and ``/redoc``) are served
from the installed packages: nothing loads from another origin.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from sealroom.controlplane.services.hosts import tee_labels
from sealroom.controlplane.services.receipts import ReceiptCheck
from sealroom.controlplane.state import ControlPlane
from sealroom.controlplane.store.models import Computation
from sealroom.controlplane.web.sessions import SessionService, WebPrincipal, csrf_ok
from sealroom.errors import (
    AccessDeniedError,
    InvalidInputError,
    NotFoundError,
    SealroomError,
    UnauthenticatedError,
)
from sealroom.protocol.enclave import filled_slots, slot_names
from sealroom.protocol.lifecycle import FINAL, STATES, State, status_text
from sealroom.tlog.entries import receipt_entry
from sealroom.tlog.merkle import leaf_hash

COOKIE = "sealroom_session"
LOGIN_COOKIE = "sealroom_login_csrf"
PREFIX = "/ui"
MAX_UPLOAD = 4 << 20  # a manifest or a receipt; larger is refused, not buffered

_HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(_HERE / "templates"))

# Pages are same-origin only: no inline script, no other origin, never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

#: The lifecycle's straight line, as the timeline shows it.
TIMELINE = [s for s in STATES if s not in (State.FAILED,)]


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"


templates.env.filters["t"] = _fmt_time


class CsrfError(AccessDeniedError):
    code = "csrf-token-invalid"


def _cp(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.cp
    return cp


def _sessions(request: Request) -> SessionService:
    svc: SessionService = request.app.state.web_sessions
    return svc


def _web_user(request: Request) -> WebPrincipal:
    return _sessions(request).authenticate(request.cookies.get(COOKIE))


WebUser = Annotated[WebPrincipal, Depends(_web_user)]


def _check_csrf(request: Request, given: str | None) -> None:
    token = request.cookies.get(COOKIE) or ""
    if not csrf_ok(token, given):
        raise CsrfError("the form's CSRF token is missing or wrong; reload the page")


def _page(
    request: Request, name: str, ctx: dict[str, Any], user: WebPrincipal | None, status: int = 200
) -> HTMLResponse:
    full = {"user": user.principal if user else None, "csrf": user.csrf if user else "", **ctx}
    resp = templates.TemplateResponse(request, name, full, status_code=status)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def wants_html(request: Request) -> bool:
    path = request.url.path
    return path.startswith(PREFIX + "/") and not path.endswith("/live")


def error_page(request: Request, e: SealroomError, status: int) -> Response:
    """How a SealroomError raised under /ui is shown: not logged in → the login page; the
    rest as a page that says what went wrong (the API's problem+json elsewhere)."""
    if isinstance(e, UnauthenticatedError):
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        resp = RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)
        if request.cookies.get(COOKIE):
            resp.delete_cookie(COOKIE, path=PREFIX)
        return resp
    try:
        user = _web_user(request)
    except SealroomError:
        user = None
    return _page(request, "error.html", {"status": status, "error": e}, user, status)


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard: never another origin (open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//"):
        return target
    return f"{PREFIX}/computations"


async def _read_upload(f: UploadFile | None, what: str) -> bytes:
    if f is None or not f.filename:
        return b""
    data = await f.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise InvalidInputError(f"{what}: larger than {MAX_UPLOAD} bytes")
    return data


def _json_doc(text: bytes | str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise InvalidInputError(f"{what}: not JSON ({e})") from e


router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/", response_model=None)
def index() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/computations", status_code=303)


@router.get("/login", response_model=None)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    # Login CSRF: a double-submit token (cookie + form field) before any session exists.
    token = secrets.token_urlsafe(24)
    resp = _page(request, "login.html", {"login_csrf": token, "next": _safe_next(next)}, None)
    resp.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=PREFIX,
        max_age=3600,
    )
    return resp


@router.post("/login", response_model=None)
def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=256)] = "",
    login_csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    cookie = request.cookies.get(LOGIN_COOKIE) or ""
    if not cookie or not secrets.compare_digest(cookie, login_csrf):
        raise CsrfError("the login form's CSRF token is missing or wrong; reload the page")
    try:
        token, _ = _sessions(request).login(api_key)
    except UnauthenticatedError as e:
        return _page(
            request,
            "login.html",
            {"login_csrf": login_csrf, "next": _safe_next(next), "error": e.message},
            None,
            401,
        )
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=PREFIX,
    )
    resp.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return resp


@router.post("/logout", response_model=None)
def logout(
    request: Request, user: WebUser, csrf: Annotated[str, Form(max_length=128)] = ""
) -> Response:
    _check_csrf(request, csrf)
    _sessions(request).logout(request.cookies.get(COOKIE))
    resp = RedirectResponse(f"{PREFIX}/login", status_code=303)
    resp.delete_cookie(COOKIE, path=PREFIX)
    return resp


@router.get("/hosts", response_model=None)
def hosts(request: Request, user: WebUser) -> HTMLResponse:
    cp = _cp(request)
    cp.auth.require_admin(user.principal)
    rows = [
        {
            "host": h,
            "res": res,
            "enclaves": n,
            "verified": sorted(set(h.tee_verified or ())),
            "claimed_only": sorted(set(h.tee_kinds) - set(h.tee_verified or ())),
            "labels": tee_labels(h.tee_kinds, h.tee_verified),
        }
        for h, res, n in cp.hosts.list_all()
    ]
    return _page(request, "hosts.html", {"rows": rows}, user)


@router.post("/hosts/{host_id}/drain", response_model=None)
def drain_host(
    request: Request,
    user: WebUser,
    host_id: str,
    csrf: Annotated[str, Form(max_length=128)] = "",
    draining: Annotated[str, Form(max_length=1)] = "1",
) -> Response:
    _check_csrf(request, csrf)
    cp = _cp(request)
    cp.auth.require_admin(user.principal)
    cp.hosts.drain(host_id, draining == "1")
    return RedirectResponse(f"{PREFIX}/hosts", status_code=303)


@router.post("/hosts/{host_id}/remove", response_model=None)
def remove_host(
    request: Request, user: WebUser, host_id: str, csrf: Annotated[str, Form(max_length=128)] = ""
) -> Response:
    _check_csrf(request, csrf)
    cp = _cp(request)
    cp.auth.require_admin(user.principal)
    cp.hosts.remove(host_id)
    return RedirectResponse(f"{PREFIX}/hosts", status_code=303)


@router.get("/computations", response_model=None)
def computations(request: Request, user: WebUser) -> HTMLResponse:
    cp = _cp(request)
    comps = [
        {"c": c, "status": status_text(c.state, c.outcome, c.reason)}
        for c in reversed(cp.computations.list_for(user.principal))
    ]
    return _page(request, "computations.html", {"computations": comps}, user)


@router.post("/computations", response_model=None)
async def create_computation(
    request: Request,
    user: WebUser,
    csrf: Annotated[str, Form(max_length=128)] = "",
    manifest_text: Annotated[str, Form(max_length=MAX_UPLOAD)] = "",
    manifest_file: UploadFile | None = None,
    tee: Annotated[str, Form(max_length=16)] = "",
    queue: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    _check_csrf(request, csrf)
    data = await _read_upload(manifest_file, "manifest file") or manifest_text.encode()
    if not data.strip():
        raise InvalidInputError("manifest: give a manifest file or paste its JSON")
    doc = _json_doc(data, "manifest")
    cp = _cp(request)
    c = await run_in_threadpool(
        cp.computations.create, user.principal, doc, tee or _manifest_tee(doc), bool(queue)
    )
    return RedirectResponse(f"{PREFIX}/computations/{c.id}", status_code=303)


def _manifest_tee(doc: Any) -> str:
    """The TEE kind the API would default to: the policy's first required kind, else sim
    when it allows simulated evidence."""
    policy = doc.get("policy") if isinstance(doc, dict) else None
    if isinstance(policy, dict):
        if policy.get("allow_simulated"):
            return "sim"
        req = policy.get("require")
        if isinstance(req, list) and req and isinstance(req[0], str):
            return req[0]
    return "sim"


def _timeline(c: Computation, events: list[Any]) -> list[dict[str, Any]]:
    """Each lifecycle state with when it was reached (from the events), in order; a
    failure is shown where it happened, and the outcome is kept after ``destroyed``."""
    reached: dict[str, datetime] = {}
    for e in events:
        reached.setdefault(e.state, e.time)
    outcome = c.outcome if c.state == State.DESTROYED else c.state
    line = []
    for s in TIMELINE:
        if s == State.COMPLETED and outcome == State.FAILED:
            line.append({"state": "failed", "time": reached.get("failed"), "kind": "failed"})
            continue
        t = reached.get(s.value)
        line.append({"state": s.value, "time": t, "kind": "done" if t else "pending"})
    return line


def _slots(c: Computation, events: list[Any]) -> list[dict[str, Any]]:
    """The manifest's slots and whether the enclave reported each one filled."""
    names = slot_names(c.manifest)
    filled = filled_slots(((e.type, e.message) for e in events), names)
    return [{"name": n, "filled": n in filled} for n in names]


@router.get("/computations/{cid}", response_model=None)
def computation(request: Request, user: WebUser, cid: str) -> HTMLResponse:
    cp = _cp(request)
    c = cp.computations.get(user.principal, cid)
    events, _ = cp.computations.events(user.principal, cid, 0)
    try:
        has_receipt = bool(cp.blobs.path(c.id, "receipt"))
    except NotFoundError:
        has_receipt = False
    ctx = {
        "c": c,
        "events": events,
        "timeline": _timeline(c, events),
        "slots": _slots(c, events),
        "final": c.state in FINAL,
        "outcome": c.outcome if c.state == State.DESTROYED else c.state,
        "status": status_text(c.state, c.outcome, c.reason),
        "has_receipt": has_receipt,
        "simulated": c.tee == "sim",
    }
    return _page(request, "computation.html", ctx, user)


@router.get("/computations/{cid}/live", response_model=None)
def computation_live(request: Request, user: WebUser, cid: str, after: int = 0) -> JSONResponse:
    """What the page's script polls: state and new events (JSON, same session)."""
    cp = _cp(request)
    c = cp.computations.get(user.principal, cid)
    evs, _ = cp.computations.events(user.principal, cid, max(0, after))
    body = {
        "state": c.state,
        "outcome": c.outcome if c.state == State.DESTROYED else c.state,
        "reason": c.reason,
        "status": status_text(c.state, c.outcome, c.reason),
        "final": c.state in FINAL,
        "enclave_url": c.enclave_url,
        "events": [
            {
                "seq": e.seq,
                "time": _fmt_time(e.time),
                "type": e.type,
                "state": e.state,
                "reason": e.reason,
                "message": e.message,
                "source": "host" if e.enclave_seq is not None else "control-plane",
            }
            for e in evs
        ],
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/computations/{cid}/cancel", response_model=None)
def cancel(
    request: Request, user: WebUser, cid: str, csrf: Annotated[str, Form(max_length=128)] = ""
) -> Response:
    _check_csrf(request, csrf)
    _cp(request).computations.cancel(user.principal, cid)
    return RedirectResponse(f"{PREFIX}/computations/{cid}", status_code=303)


def _stored_receipt(cp: ControlPlane, c: Computation) -> tuple[bytes | None, ReceiptCheck | None]:
    try:
        data = cp.blobs.read(c.id, "receipt")
    except NotFoundError:
        return None, None
    return data, cp.receipts.check(c.manifest, data)


def _log_inclusion(cp: ControlPlane, data: bytes) -> dict[str, Any] | None:
    """Where the transparency log holds this receipt, with its inclusion proof checked
    against the log's signed checkpoint (docs/adr/0031); None if the log does not."""
    leaf = leaf_hash(receipt_entry(data))
    index = cp.tlog.find(leaf)
    if index is None:
        return None
    proof = cp.tlog.proof(index)
    try:
        checkpoint = proof.verify(leaf, [cp.tlog.signer.verifier], cp.tlog.origin)
        error = ""
    except SealroomError as e:
        checkpoint, error = None, e.message
    return {
        "index": index,
        "hashes": [h.hex() for h in proof.hashes],
        "size": checkpoint.size if checkpoint else None,
        "root": checkpoint.root_hash.hex() if checkpoint else "",
        "origin": cp.tlog.origin,
        "vkey": cp.tlog.vkey(),
        "error": error,
    }


@router.get("/computations/{cid}/evidence", response_model=None)
def evidence(request: Request, user: WebUser, cid: str) -> HTMLResponse:
    cp = _cp(request)
    c = cp.computations.get(user.principal, cid)
    _, check = _stored_receipt(cp, c)
    ctx = {"c": c, "check": check, "simulated": bool(check and check.simulated) or c.tee == "sim"}
    return _page(request, "evidence.html", ctx, user)


@router.get("/computations/{cid}/receipt", response_model=None)
def receipt(request: Request, user: WebUser, cid: str) -> HTMLResponse:
    cp = _cp(request)
    c = cp.computations.get(user.principal, cid)
    data, check = _stored_receipt(cp, c)
    pretty = json.dumps(json.loads(data), indent=2) if data and check and check.payload else ""
    ctx = {
        "c": c,
        "check": check,
        "tlog": _log_inclusion(cp, data) if data else None,
        "receipt_json": pretty,
        "simulated": bool(check and check.simulated) or c.tee == "sim",
    }
    return _page(request, "receipt.html", ctx, user)


@router.get("/verify", response_model=None)
def verify_form(request: Request, user: WebUser) -> HTMLResponse:
    return _page(request, "verify.html", {"check": None}, user)


@router.post("/verify", response_model=None)
async def verify_upload(
    request: Request,
    user: WebUser,
    csrf: Annotated[str, Form(max_length=128)] = "",
    receipt_file: UploadFile | None = None,
    manifest_file: UploadFile | None = None,
) -> HTMLResponse:
    """Verify a receipt the user uploads against a manifest they upload, with this control
    plane's trust anchors (vendor roots; the sim root only if the operator configured
    one): the same check the API applies to receipts from hosts."""
    _check_csrf(request, csrf)
    rdata = await _read_upload(receipt_file, "receipt file")
    mdata = await _read_upload(manifest_file, "manifest file")
    if not rdata or not mdata:
        raise InvalidInputError("choose both a receipt file and its manifest file")
    manifest = _json_doc(mdata, "manifest")
    check = await run_in_threadpool(_cp(request).receipts.check, manifest, rdata)
    ctx = {
        "check": check,
        "simulated": check.simulated,
        "filename": receipt_file.filename if receipt_file else "",
    }
    return _page(request, "verify.html", ctx, user)


def _docs_router() -> APIRouter:
    """``/docs`` and ``/redoc`` with their assets served from fastapi-offline's package."""
    r = APIRouter(include_in_schema=False)

    @r.get("/docs", response_model=None)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="sealroom control plane - API",
            swagger_js_url="/static/api-docs/swagger-ui-bundle.js",
            swagger_css_url="/static/api-docs/swagger-ui.css",
            swagger_favicon_url="/static/api-docs/favicon.png",
        )

    @r.get("/redoc", response_model=None)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="sealroom control plane - API",
            redoc_js_url="/static/api-docs/redoc.standalone.js",
            redoc_favicon_url="/static/api-docs/favicon.png",
            with_google_fonts=False,
        )

    return r


def install(app: FastAPI, cp: ControlPlane) -> None:
    """Mount the dashboard, its static files and the offline API docs on ``app`` (built
    with ``docs_url=None, redoc_url=None``)."""
    app.state.web_sessions = SessionService(cp.store, cp.auth)
    app.include_router(router)
    app.include_router(_docs_router())
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(_HERE / "static")), name="ui-static")
    docs_assets = resources.files("fastapi_offline") / "static"
    app.mount("/static/api-docs", StaticFiles(directory=str(docs_assets)), name="api-docs")
