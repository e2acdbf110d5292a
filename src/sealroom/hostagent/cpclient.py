"""The host agent's client for the control plane's agent endpoints: the agent contract
(``sealroom.protocol.agent``) over the one HTTP client of the untrusted side
(``sealroom.client.http``, ADR 0016).

Errors keep the class the control plane raised (problem+json); no answer, 5xx and 429 are
``UnavailableError`` / ``CapacityError`` (the agent backs off and retries), a refusal
(401/403/404/409/4xx) is final for that call.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import quote

from sealroom.client.http import CHUNK, ApiClient
from sealroom.protocol.agent import (
    HEARTBEAT_PATH,
    REGISTER_PATH,
    AgentEvent,
    AgentEvents,
    Heartbeat,
    HeartbeatReply,
    RegisterReply,
    RegisterRequest,
    Resources,
    blob_path,
    events_path,
)
from sealroom.protocol.controlplane import H_BLOB_SHA256

TIMEOUT = 15.0


class ControlPlaneClient(ApiClient):
    def __init__(
        self,
        base_url: str,
        credential: str | None = None,
        timeout: float = TIMEOUT,
        *,
        ca_cert: Path | None = None,
    ) -> None:
        # the agent has its own backoff loop: one quick retry of a lost connection only
        super().__init__(base_url, credential, timeout=timeout, retries=1, ca_cert=ca_cert)

    def register(
        self, join_token: str, name: str, tee_kinds: list[str], resources: dict[str, int]
    ) -> RegisterReply:
        req = RegisterRequest(
            join_token=join_token, name=name, tee_kinds=tee_kinds, resources=Resources(**resources)
        )
        return self.model(
            "POST", REGISTER_PATH, RegisterReply, json=req.model_dump(mode="json"), auth=False
        )

    def heartbeat(self, report: Heartbeat) -> HeartbeatReply:
        return self.model(
            "POST", HEARTBEAT_PATH, HeartbeatReply, json=report.model_dump(mode="json")
        )

    def post_events(self, computation_id: str, events: list[AgentEvent]) -> None:
        body = AgentEvents(events=events).model_dump(mode="json", exclude_none=True)
        self.request("POST", events_path(quote(computation_id, safe="")), json=body)

    def put_blob(self, computation_id: str, name: str, path: Path) -> None:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        self.upload(
            blob_path(quote(computation_id, safe=""), quote(name, safe="")),
            path,
            headers={"Content-Type": "application/octet-stream", H_BLOB_SHA256: h.hexdigest()},
        )
