"""The host agent's HTTP client for the control plane's agent endpoints (standard library).

Failures map onto sealroom errors: no answer / 5xx / 429 -> UnavailableError (the agent
backs off and retries), 401/403 -> AccessDeniedError, 404 -> NotFoundError, 409 ->
ConflictError, other 4xx -> InvalidInputError; the problem+json ``detail`` is the message.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import select
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import ValidationError

from sealroom.errors import (
    AccessDeniedError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SealroomError,
    UnavailableError,
)
from sealroom.protocol.agent import Heartbeat, HeartbeatReply

API = "/api/v1"
TIMEOUT = 15.0
CHUNK = 1 << 20


class ControlPlaneClient:
    def __init__(self, base_url: str, credential: str | None = None, timeout: float = TIMEOUT):
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(f"control plane URL {base_url!r}: want http(s)://HOST:PORT")
        self.base_url = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.credential = credential
        self.timeout = timeout

    def _conn(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | Path | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, bytes]:
        hdrs = dict(headers or {})
        if auth and self.credential:
            hdrs["Authorization"] = f"Bearer {self.credential}"
        conn = self._conn()
        try:
            if isinstance(body, Path):
                size = body.stat().st_size
                conn.putrequest(method, self._prefix + path)
                for k, v in {**hdrs, "Content-Length": str(size)}.items():
                    conn.putheader(k, v)
                conn.endheaders()
                sock = conn.sock
                try:
                    with body.open("rb") as f:
                        # the control plane may refuse from the headers alone (403, 413):
                        # it answers at once, and we stop sending
                        while not (sock and select.select([sock], [], [], 0)[0]):
                            chunk = f.read(CHUNK)
                            if not chunk:
                                break
                            conn.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed early: the answer says why
            else:
                conn.request(method, self._prefix + path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise UnavailableError(
                f"control plane {self.base_url} unreachable: {e}", code="control-plane-unreachable"
            ) from e
        finally:
            conn.close()
        if resp.status >= 400:
            raise _problem(resp.status, data)
        return resp.status, data

    def _json(self, method: str, path: str, obj: Any, *, auth: bool = True) -> Any:
        _, data = self._request(
            method,
            path,
            body=json.dumps(obj).encode(),
            headers={"Content-Type": "application/json"},
            auth=auth,
        )
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError as e:
            raise UnavailableError(
                f"control plane sent non-JSON for {method} {path}", code="bad-response"
            ) from e

    # ---- agent endpoints ----------------------------------------------------------------
    def register(
        self, join_token: str, name: str, tee_kinds: list[str], resources: dict[str, int]
    ) -> tuple[str, str]:
        obj = self._json(
            "POST",
            f"{API}/agent/register",
            {
                "join_token": join_token,
                "name": name,
                "tee_kinds": tee_kinds,
                "resources": resources,
            },
            auth=False,
        )
        try:
            return str(obj["host_id"]), str(obj["credential"])
        except (KeyError, TypeError) as e:
            raise UnavailableError("registration answer lacks host_id/credential") from e

    def heartbeat(self, report: Heartbeat) -> HeartbeatReply:
        obj = self._json("POST", f"{API}/agent/heartbeat", report.model_dump(mode="json"))
        try:
            return HeartbeatReply.model_validate(obj)
        except ValidationError as e:
            raise UnavailableError(
                f"heartbeat answer does not follow the agent contract: {e}", code="bad-response"
            ) from e

    def post_events(self, computation_id: str, events: list[dict[str, Any]]) -> None:
        self._json(
            "POST",
            f"{API}/agent/computations/{quote(computation_id, safe='')}/events",
            {"events": events},
        )

    def put_blob(self, computation_id: str, name: str, path: Path) -> None:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        cid = quote(computation_id, safe="")
        self._request(
            "PUT",
            f"{API}/agent/computations/{cid}/blobs/{quote(name, safe='')}",
            body=path,
            headers={
                "Content-Type": "application/octet-stream",
                "X-Sealroom-Sha256": h.hexdigest(),
            },
        )


def _problem(status: int, data: bytes) -> SealroomError:
    detail = data[:500].decode("utf-8", "replace")
    code = ""
    try:
        obj = json.loads(data)
        if isinstance(obj, dict):
            detail = str(obj.get("detail") or obj.get("title") or detail)
            code = str(obj.get("type") or "")
    except ValueError:
        pass
    msg = f"control plane answered {status}: {detail}"
    if status >= 500 or status == 429:
        return UnavailableError(msg, code=code or "control-plane-error")
    if status in (401, 403):
        return AccessDeniedError(msg, code=code or "access-denied")
    if status == 404:
        return NotFoundError(msg, code=code or "not-found")
    if status == 409:
        return ConflictError(msg, code=code or "conflict")
    return InvalidInputError(msg, code=code or "invalid-input")
