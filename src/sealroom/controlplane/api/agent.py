"""Agent endpoints (agent credential; registration takes a one-time join token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from sealroom.controlplane.api.deps import CP, Agent
from sealroom.errors import PayloadTooLargeError
from sealroom.protocol.agent import (
    AgentEvents,
    Heartbeat,
    HeartbeatReply,
    RegisterReply,
    RegisterRequest,
)
from sealroom.protocol.api import Problem

router = APIRouter(prefix="/api/v1/agent")

Id = Annotated[str, Path(min_length=1, max_length=64)]
BlobName = Annotated[str, Path(min_length=1, max_length=100)]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (400, 401, 403, 404, 409, 411, 413, 422)
}
WRITE_BATCH = 1 << 20  # bytes gathered before each write to disk


@router.post("/register", status_code=201, responses=ERRORS)
def register(body: RegisterRequest, cp: CP) -> RegisterReply:
    host_id, credential = cp.hosts.register(
        body.join_token, body.name, body.tee_kinds, body.resources.model_dump()
    )
    return RegisterReply(host_id=host_id, credential=credential)


@router.post("/heartbeat", responses=ERRORS)
def heartbeat(body: Heartbeat, cp: CP, agent: Agent) -> HeartbeatReply:
    desired = cp.hosts.heartbeat(
        agent, body.resources.model_dump(exclude_unset=True), body.tee_kinds, body.enclaves
    )
    return HeartbeatReply(desired=desired, heartbeat_interval=cp.settings.heartbeat_interval)


@router.post("/computations/{computation_id}/events", status_code=204, responses=ERRORS)
def forward_events(computation_id: Id, body: AgentEvents, cp: CP, agent: Agent) -> Response:
    cp.hosts.forward_events(agent, computation_id, body.events)
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
    # Authorized from the path and headers before the body is read: a rogue agent gets
    # its 403/413 at once, not after streaming gigabytes. The body then goes to disk in
    # pieces (never held whole), cut off past the declared length and the manifest's bound.
    limit = await run_in_threadpool(
        cp.hosts.authorize_blob,
        agent,
        computation_id,
        name,
        x_sealroom_sha256,
        request.headers.get("content-length"),
    )
    declared = min(limit, int(request.headers["content-length"]))
    writer = await run_in_threadpool(cp.blobs.writer, computation_id, name)
    try:
        buf = bytearray()
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > declared:
                raise PayloadTooLargeError(
                    f"blob {name}: body exceeds its Content-Length / bound of {declared} bytes"
                )
            buf += chunk
            if len(buf) >= WRITE_BATCH:
                await run_in_threadpool(writer.write, bytes(buf))
                buf.clear()
        if buf:
            await run_in_threadpool(writer.write, bytes(buf))
        await run_in_threadpool(
            cp.hosts.store_blob, agent, computation_id, name, x_sealroom_sha256, writer
        )
    finally:
        await run_in_threadpool(writer.abort)
    return Response(status_code=204)
