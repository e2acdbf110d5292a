"""Agent endpoints (agent credential; registration takes a one-time join token)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from sealroom.controlplane.api.deps import CP, Agent
from sealroom.controlplane.api.schemas import (
    AgentEventsIn,
    DesiredOut,
    HeartbeatIn,
    HeartbeatOut,
    Problem,
    RegisterIn,
    RegisterOut,
)
from sealroom.controlplane.services.hosts import EnclaveReport, ForwardedEvent
from sealroom.errors import InvalidInputError

router = APIRouter(prefix="/api/v1/agent")

Id = Annotated[str, Path(min_length=1, max_length=64)]
BlobName = Annotated[str, Path(min_length=1, max_length=100)]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (400, 401, 403, 404, 409)
}
MAX_BLOB = 1 << 34


@router.post("/register", status_code=201, responses=ERRORS)
def register(body: RegisterIn, cp: CP) -> RegisterOut:
    host_id, credential = cp.hosts.register(
        body.join_token, body.name, body.tee_kinds, body.resources.model_dump()
    )
    return RegisterOut(host_id=host_id, credential=credential)


@router.post("/heartbeat", responses=ERRORS)
def heartbeat(body: HeartbeatIn, cp: CP, agent: Agent) -> HeartbeatOut:
    desired = cp.hosts.heartbeat(
        agent,
        body.resources.model_dump(exclude_unset=True),
        body.tee_kinds,
        [
            EnclaveReport(e.computation_id, e.state, e.endpoint, e.reason, e.stats)
            for e in body.enclaves
        ],
    )
    return HeartbeatOut(
        desired=[
            DesiredOut(
                computation_id=d.computation_id, action=d.action, manifest=d.manifest, tee=d.tee
            )
            for d in desired
        ],
        heartbeat_interval=cp.settings.heartbeat_interval,
    )


@router.post("/computations/{computation_id}/events", status_code=204, responses=ERRORS)
def forward_events(computation_id: Id, body: AgentEventsIn, cp: CP, agent: Agent) -> Response:
    cp.hosts.forward_events(
        agent,
        computation_id,
        [ForwardedEvent(e.seq, e.time, e.type, e.message) for e in body.events],
    )
    return Response(status_code=204)


@router.put(
    "/computations/{computation_id}/blobs/{name}",
    status_code=204,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def put_blob(
    computation_id: Id,
    name: BlobName,
    request: Request,
    cp: CP,
    agent: Agent,
    x_sealroom_sha256: Annotated[str, Header(alias="X-Sealroom-Sha256", max_length=128)],
) -> Response:
    # Body is read into memory in chunks (sealed results are bounded by the manifest's
    # max_result_bytes), then written atomically by the blob store.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BLOB:
            raise InvalidInputError("blob larger than the control plane accepts")
        chunks.append(chunk)

    def it() -> Iterator[bytes]:
        yield from chunks

    await run_in_threadpool(cp.hosts.put_blob, agent, computation_id, name, it(), x_sealroom_sha256)
    return Response(status_code=204)
