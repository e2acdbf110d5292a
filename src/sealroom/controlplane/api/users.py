"""User endpoints: accounts, keys, hosts (admin), computations, events, results."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from sealroom.controlplane.api.deps import CP, OptionalUser, User
from sealroom.controlplane.services.auth import Principal
from sealroom.controlplane.services.hosts import REMOVED, tee_labels
from sealroom.controlplane.state import ControlPlane
from sealroom.controlplane.store.models import Computation, Event, Host
from sealroom.errors import ConflictError, NotFoundError
from sealroom.protocol.api import (
    AccountIn,
    AccountOut,
    AccountsOut,
    ChallengeOut,
    ComputationCreated,
    ComputationDetail,
    ComputationIn,
    ComputationOut,
    ComputationsOut,
    EventOut,
    EventsOut,
    HostChangedOut,
    HostDrainIn,
    HostOut,
    HostsOut,
    JoinTokenOut,
    KeyOut,
    MeOut,
    PartyViewOut,
    Problem,
    QuotaIn,
    QuotaOut,
    ResourcesOut,
    SlotOut,
    StateOut,
)
from sealroom.protocol.controlplane import H_SEALED_SHA256
from sealroom.protocol.enclave import filled_slots, slot_names
from sealroom.protocol.lifecycle import FINAL, State, status_text
from sealroom.tlog.entries import receipt_entry
from sealroom.tlog.merkle import leaf_hash

router = APIRouter(prefix="/api/v1")

Id = Annotated[str, Path(min_length=1, max_length=64)]
ConsumerName = Annotated[str, Path(min_length=1, max_length=64)]
After = Annotated[int, Query(ge=0, le=2**31 - 1)]
ChallengeH = Annotated[str | None, Header(alias="X-Sealroom-Challenge", max_length=128)]
SignatureH = Annotated[str | None, Header(alias="X-Sealroom-Signature", max_length=256)]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (400, 401, 403, 404, 409, 429)
}


def _out(c: Computation) -> ComputationOut:
    return ComputationOut(
        id=c.id,
        name=c.name,
        state=State(c.state),
        reason=c.reason,
        outcome=State(c.outcome) if c.outcome else None,
        status=status_text(c.state, c.outcome, c.reason),
        manifest_hash=c.manifest_hash,
        host_id=c.host_id,
        enclave_url=c.enclave_url,
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


def _event(e: Event) -> EventOut:
    return EventOut(
        seq=e.seq,
        time=e.time,
        type=e.type,
        state=e.state,
        reason=e.reason,
        message=e.message,
        source="host" if e.enclave_seq is not None else "control-plane",
    )


@router.post("/accounts", status_code=201, responses=ERRORS)
def create_account(body: AccountIn, cp: CP, user: User) -> AccountOut:
    acc = cp.auth.create_account(user, body.name, body.role)
    return AccountOut(id=acc.id, name=acc.name, role=acc.role)


@router.get("/accounts", responses=ERRORS)
def list_accounts(cp: CP, user: User) -> AccountsOut:
    """All accounts (admin); your own (user)."""
    return AccountsOut(
        accounts=[
            AccountOut(id=a.id, name=a.name, role=a.role) for a in cp.auth.list_accounts(user)
        ]
    )


@router.post("/accounts/{account_id}/keys", status_code=201, responses=ERRORS)
def create_key(account_id: Id, cp: CP, user: User) -> KeyOut:
    kid, key = cp.auth.create_key(user, account_id)
    return KeyOut(key_id=kid, key=key)


@router.put("/accounts/{account_id}/quota", responses=ERRORS)
def set_quota(account_id: Id, body: QuotaIn, cp: CP, user: User) -> QuotaOut:
    cp.auth.require_admin(user)
    q = cp.computations.set_quota(user, account_id, body.computations, body.vcpus, body.memory_mb)
    return QuotaOut(**asdict(q))


@router.get("/accounts/{account_id}/quota", responses=ERRORS)
def get_quota(account_id: Id, cp: CP, user: User) -> QuotaOut:
    if account_id != user.account_id:
        cp.auth.require_admin(user)
    return QuotaOut(**asdict(cp.computations.get_quota(account_id)))


@router.delete("/keys/{key_id}", status_code=204, responses=ERRORS)
def revoke_key(key_id: Id, cp: CP, user: User) -> Response:
    cp.auth.revoke_key(user, key_id)
    return Response(status_code=204)


@router.get("/me", responses=ERRORS)
def me(user: User) -> MeOut:
    return MeOut(account_id=user.account_id, name=user.name, role=user.role)


@router.post("/hosts/join-tokens", status_code=201, responses=ERRORS)
def join_token(cp: CP, user: User) -> JoinTokenOut:
    token, expires = cp.auth.create_join_token(user)
    return JoinTokenOut(token=token, expires_at=expires)


@router.get("/hosts", responses=ERRORS)
def list_hosts(cp: CP, user: User) -> HostsOut:
    cp.auth.require_admin(user)
    return HostsOut(
        hosts=[
            HostOut(
                id=h.id,
                name=h.name,
                state="online" if h.state == "online" else "lost",
                last_heartbeat=h.last_heartbeat,
                tee_kinds_claimed=list(h.tee_kinds),
                tee_kinds_verified=list(h.tee_verified or ()),
                tee_verified_at=h.tee_verified_at,
                tee=tee_labels(h.tee_kinds, h.tee_verified),
                resources=ResourcesOut(**res),
                enclaves=n,
                draining=h.draining,
            )
            for h, res, n in cp.hosts.list_all()
        ]
    )


HostRef = Annotated[str, Path(min_length=1, max_length=128, description="host id or name")]


def _host_changed(h: Host) -> HostChangedOut:
    state: Literal["online", "lost", "removed"] = (
        "removed" if h.state == REMOVED else "online" if h.state == "online" else "lost"
    )
    return HostChangedOut(id=h.id, name=h.name, state=state, draining=h.draining)


@router.post("/hosts/{host}/drain", responses=ERRORS)
def drain_host(host: HostRef, body: HostDrainIn, cp: CP, user: User) -> HostChangedOut:
    """Stop placing computations on a host (``draining: false`` resumes); admin."""
    cp.auth.require_admin(user)
    return _host_changed(cp.hosts.drain(host, body.draining))


@router.delete("/hosts/{host}", responses=ERRORS)
def remove_host(host: HostRef, cp: CP, user: User) -> HostChangedOut:
    """Forget a host and revoke its agent's credential (409 while it runs computations);
    admin."""
    cp.auth.require_admin(user)
    return _host_changed(cp.hosts.remove(host))


@router.post("/computations", status_code=201, responses=ERRORS)
def create_computation(body: ComputationIn, cp: CP, user: User) -> ComputationCreated:
    c = cp.computations.create(user, body.manifest, body.tee, body.queue)
    return ComputationCreated(
        id=c.id, state=State(c.state), manifest_hash=c.manifest_hash, host_id=c.host_id
    )


@router.get("/computations", responses=ERRORS)
def list_computations(cp: CP, user: User) -> ComputationsOut:
    return ComputationsOut(computations=[_out(c) for c in cp.computations.list_for(user)])


@router.get("/computations/{computation_id}", responses=ERRORS)
def get_computation(computation_id: Id, cp: CP, user: User) -> ComputationDetail:
    c = cp.computations.get(user, computation_id)
    return ComputationDetail(
        **_out(c).model_dump(), manifest=c.manifest, events_count=c.events_count, tee=c.tee
    )


@router.post("/computations/{computation_id}/cancel", responses=ERRORS)
def cancel_computation(computation_id: Id, cp: CP, user: User) -> StateOut:
    return StateOut(state=State(cp.computations.cancel(user, computation_id)))


@router.delete("/computations/{computation_id}", status_code=204, responses=ERRORS)
def delete_computation(computation_id: Id, cp: CP, user: User) -> Response:
    cp.computations.delete(user, computation_id)
    return Response(status_code=204)


@router.get("/computations/{computation_id}/events", responses=ERRORS)
def events(computation_id: Id, cp: CP, user: User, after: After = 0) -> EventsOut:
    evs, _ = cp.computations.events(user, computation_id, after)
    return EventsOut(events=[_event(e) for e in evs])


@router.get(
    "/computations/{computation_id}/events/stream",
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    response_class=StreamingResponse,
)
async def event_stream(
    computation_id: Id, cp: CP, user: User, after: After = 0
) -> StreamingResponse:
    # Check visibility before the stream starts, so a 404 is a proper response.
    await run_in_threadpool(cp.computations.get, user, computation_id)

    async def gen() -> AsyncIterator[bytes]:
        last = after
        while True:
            evs, state = await run_in_threadpool(cp.computations.events, user, computation_id, last)
            for e in evs:
                last = e.seq
                data = _event(e).model_dump_json()
                yield f"id: {e.seq}\nevent: {e.type}\ndata: {data}\n\n".encode()
            if not evs and state in FINAL:
                return
            if not evs:
                await asyncio.sleep(0.25)

    return StreamingResponse(gen(), media_type="text/event-stream")


@router.get("/computations/{computation_id}/stats", responses=ERRORS)
def stats(computation_id: Id, cp: CP, user: User) -> dict[str, Any]:
    return dict(cp.computations.get(user, computation_id).stats or {})


@router.get("/computations/{computation_id}/party-view", responses=ERRORS)
def party_view(
    computation_id: Id,
    cp: CP,
    party: Annotated[str, Query(min_length=1, max_length=64)],
    x_sealroom_challenge: ChallengeH = None,
    x_sealroom_signature: SignatureH = None,
) -> PartyViewOut:
    """A computation's public state for a party its manifest names, who signs a fresh
    challenge with its manifest key (no account needed; docs/adr/0037)."""
    c, name = cp.computations.authenticate_party(
        computation_id, party, x_sealroom_challenge, x_sealroom_signature
    )
    evs, _ = cp.computations.events(None, c.id, 0)
    names = slot_names(c.manifest)
    filled = filled_slots(((e.type, e.message) for e in evs), names)
    try:
        has_receipt = bool(cp.blobs.path(c.id, "receipt"))
    except NotFoundError:
        has_receipt = False
    return PartyViewOut(
        id=c.id,
        party=name,
        state=State(c.state),
        outcome=State(c.outcome) if c.outcome else None,
        status=status_text(c.state, c.outcome, c.reason),
        manifest_hash=c.manifest_hash,
        enclave_url=c.enclave_url,
        slots=[SlotOut(name=n, filled=n in filled) for n in names],
        receipt=has_receipt,
    )


@router.get("/computations/{computation_id}/challenge", responses=ERRORS)
def challenge(computation_id: Id, cp: CP) -> ChallengeOut:
    return ChallengeOut(challenge=cp.computations.new_challenge(computation_id))


def _sealed_blob(cp: ControlPlane, cid: str, blob: str) -> FileResponse:
    path = cp.blobs.path(cid, blob)
    sha = cp.computations.blob_sha256(cid, blob)
    return FileResponse(path, media_type="application/octet-stream", headers={H_SEALED_SHA256: sha})


def _require_completed(c: Computation) -> None:
    """Results are served when a receipt the control plane verified says the run
    completed, whatever the state says (a restarted control plane may have failed the
    computation before its receipt arrived)."""
    if not c.receipt_ok:
        raise ConflictError(
            f"computation {c.id} is {c.state}; results exist only once a receipt that "
            "verifies says it completed",
            code="computation-not-completed",
        )


@router.get(
    "/computations/{computation_id}/results/{consumer}",
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
    response_class=FileResponse,
)
def result(
    computation_id: Id,
    consumer: ConsumerName,
    cp: CP,
    x_sealroom_challenge: ChallengeH = None,
    x_sealroom_signature: SignatureH = None,
) -> FileResponse:
    c, name = cp.computations.authenticate_consumer(
        computation_id, consumer, x_sealroom_challenge, x_sealroom_signature
    )
    _require_completed(c)
    return _sealed_blob(cp, c.id, f"result.{name}")


@router.get(
    "/computations/{computation_id}/logs/{reader}",
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
    response_class=FileResponse,
)
def run_log(
    computation_id: Id,
    reader: ConsumerName,
    cp: CP,
    x_sealroom_challenge: ChallengeH = None,
    x_sealroom_signature: SignatureH = None,
) -> FileResponse:
    """The run log sealed to a consumer or log reader (completed and failed runs both
    have one, once the host delivered it; docs/adr/0017)."""
    c, name = cp.computations.authenticate_consumer(
        computation_id, reader, x_sealroom_challenge, x_sealroom_signature, log_readers=True
    )
    return _sealed_blob(cp, c.id, f"log.{name}")


def _receipt_bytes(
    cp: ControlPlane,
    computation_id: str,
    user: Principal | None,
    consumer: str | None,
    challenge: str | None,
    signature: str | None,
) -> bytes:
    if user is not None:
        c = cp.computations.get(user, computation_id)
    else:
        c, _ = cp.computations.authenticate_consumer(
            computation_id, consumer, challenge, signature, log_readers=True
        )
    try:
        data = cp.blobs.read(c.id, "receipt")
    except NotFoundError:
        _require_completed(c)
        raise
    try:
        json.loads(data)
    except ValueError as e:
        raise NotFoundError(f"computation {c.id}: stored receipt is not JSON") from e
    return data


@router.get(
    "/computations/{computation_id}/receipt",
    responses={**ERRORS, 200: {"content": {"application/json": {}}}},
)
def receipt(
    computation_id: Id,
    cp: CP,
    user: OptionalUser,
    consumer: Annotated[str | None, Query(max_length=64)] = None,
    x_sealroom_challenge: ChallengeH = None,
    x_sealroom_signature: SignatureH = None,
) -> Response:
    data = _receipt_bytes(
        cp, computation_id, user, consumer, x_sealroom_challenge, x_sealroom_signature
    )
    return Response(data, media_type="application/json")


@router.get(
    "/computations/{computation_id}/receipt/tlog-proof",
    responses={**ERRORS, 200: {"content": {"text/plain": {}}}},
)
def receipt_tlog_proof(
    computation_id: Id,
    cp: CP,
    user: OptionalUser,
    consumer: Annotated[str | None, Query(max_length=64)] = None,
    x_sealroom_challenge: ChallengeH = None,
    x_sealroom_signature: SignatureH = None,
) -> Response:
    """The receipt's C2SP tlog-proof: its index, inclusion proof and the log's signed
    checkpoint (the receipt's own bytes are unchanged; docs/adr/0031)."""
    data = _receipt_bytes(
        cp, computation_id, user, consumer, x_sealroom_challenge, x_sealroom_signature
    )
    index = cp.tlog.find(leaf_hash(receipt_entry(data)))
    if index is None:
        raise NotFoundError(
            f"computation {computation_id}: its receipt is not in the transparency log",
            code="tlog-not-logged",
        )
    return Response(cp.tlog.proof(index).encode(), media_type="text/plain; charset=utf-8")
