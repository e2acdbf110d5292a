"""Transparency log endpoints (docs/adr/0031). Everything under /log is public and
unauthenticated — the log holds public facts only — laid out as C2SP tlog-tiles with the
control plane's ``/log`` as the prefix: ``/log/checkpoint``, ``/log/tile/<L>/<N>[.p/<W>]``,
``/log/tile/entries/<N>[.p/<W>]``; plus dynamic proofs for clients that do not tile. The
operator publishes runtime measurements through the authenticated API."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from sealroom.controlplane.api.deps import CP, User
from sealroom.controlplane.services.auth import AuthService
from sealroom.protocol.tlog import (
    Appended,
    ConsistencyProofOut,
    EntryIn,
    InclusionProofOut,
    RuntimeMeasurementIn,
)
from sealroom.tlog import tiles
from sealroom.tlog.entries import Kind

router = APIRouter()

TEXT = "text/plain; charset=utf-8"
Size = Annotated[int, Query(ge=0, le=2**62)]
Index = Annotated[int, Path(ge=0, le=2**62)]


def _b64(hs: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hs]


@router.get("/log/checkpoint", responses={200: {"content": {TEXT: {}}}})
def checkpoint(cp: CP) -> Response:
    # mutable: no caching beyond a few seconds (tlog-tiles "Checkpoints")
    return Response(cp.tlog.checkpoint(), media_type=TEXT, headers={"Cache-Control": "max-age=2"})


@router.get("/log/vkey", responses={200: {"content": {TEXT: {}}}})
def vkey(cp: CP) -> Response:
    """The log's verifier key, for convenience only: a verifier must get it from the
    operator out of band and pin it (a key served by the log proves nothing)."""
    return Response(cp.tlog.vkey() + "\n", media_type=TEXT)


@router.get("/log/tile/{path:path}", responses={200: {"content": {"application/octet-stream": {}}}})
def tile(path: str, cp: CP) -> Response:
    data = cp.tlog.tile("tile/" + path)
    full = tiles.parse_path("tile/" + path).width == tiles.TILE_WIDTH
    cache = "public, max-age=31536000, immutable" if full else "max-age=60"
    return Response(data, media_type="application/octet-stream", headers={"Cache-Control": cache})


@router.get("/log/entries/{index}", responses={200: {"content": {"application/json": {}}}})
def entry(index: Index, cp: CP) -> Response:
    return Response(cp.tlog.entry(index), media_type="application/json")


@router.get("/log/proof/inclusion")
def inclusion(cp: CP, index: Size, size: Size | None = None) -> InclusionProofOut:
    n, hs = cp.tlog.inclusion(index, size)
    return InclusionProofOut(index=index, tree_size=n, hashes=_b64(hs))


@router.get("/log/proof/consistency")
def consistency(cp: CP, old: Size, new: Size | None = None) -> ConsistencyProofOut:
    n, hs = cp.tlog.consistency(old, new)
    return ConsistencyProofOut(old_size=old, new_size=n, hashes=_b64(hs))


@router.get("/log/tlog-proof/{index}", responses={200: {"content": {TEXT: {}}}})
def tlog_proof(index: Index, cp: CP) -> Response:
    """A C2SP tlog-proof of entry ``index`` against the current checkpoint."""
    return Response(cp.tlog.proof(index).encode(), media_type=TEXT)


@router.post("/api/v1/log/entries", status_code=201)
def append_entry(body: EntryIn, cp: CP, user: User) -> Appended:
    """The operator's components (an admin key) append key releases, lockdowns,
    deployments, heartbeats and measurements they witnessed; receipts are not accepted
    here (the control plane logs them once verified)."""
    AuthService.require_admin(user)
    a = cp.tlog.append(body.kind, body.payload)
    return Appended(index=a.index, leaf_hash=a.leaf_hash.hex())


@router.post("/api/v1/log/runtime-measurements", status_code=201)
def publish_measurement(body: RuntimeMeasurementIn, cp: CP, user: User) -> Appended:
    """The operator (an admin) publishes a runtime measurement it offers."""
    AuthService.require_admin(user)
    a = cp.tlog.append(Kind.RUNTIME_MEASUREMENT, body.model_dump())
    return Appended(index=a.index, leaf_hash=a.leaf_hash.hex())
