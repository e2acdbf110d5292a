"""A fake control plane: just the agent endpoints of the contract, recording every call.

Stdlib HTTP on 127.0.0.1; can be stopped and started again on the same port (a control
plane restart/outage). The contract's models and lifecycle come from
``sealroom.protocol`` (the same ones the real control plane uses), so the fake cannot
drift from it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sealroom.protocol.agent import Desired, Heartbeat, HeartbeatReply
from sealroom.protocol.lifecycle import OUTCOMES, State, Verdict, judge_report

TOKEN = "srj_test-join-token"
CREDENTIAL = "sra_test-credential"


@dataclass
class Comp:
    manifest: dict[str, Any]
    tee: str = "sim"
    state: State = State.SCHEDULED
    reason: str = ""
    endpoint: str | None = None
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    history: list[State] = field(default_factory=list)  # every state entered, in order


class FakeControlPlane:
    def __init__(self, heartbeat_interval: float = 0.3) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.comps: dict[str, Comp] = {}
        self.calls: Counter[str] = Counter()
        self.heartbeats: list[dict[str, Any]] = []
        self.registrations: list[dict[str, Any]] = []
        self.duplicate_events = 0
        self.refused: list[tuple[str, State, State]] = []  # (computation, was, reported)
        self.token_used = False
        self.lock = threading.RLock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._conns: set[socket.socket] = set()  # open (keep-alive) client connections

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeControlPlane:
        cp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with cp.lock:
                    cp._conns.add(self.connection)

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _send(self, status: int, obj: Any = None) -> None:
                body = b"" if obj is None else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _problem(self, status: int, kind: str, detail: str) -> None:
                self._send(
                    status, {"type": kind, "title": kind, "status": status, "detail": detail}
                )

            def _authed(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {CREDENTIAL}":
                    self._problem(401, "unauthenticated", "bad agent credential")
                    return False
                return True

            def do_POST(self) -> None:
                body = self._body()
                parts = self.path.strip("/").split("/")
                with cp.lock:
                    if self.path == "/api/v1/agent/register":
                        cp.calls["register"] += 1
                        obj = json.loads(body)
                        if obj.get("join_token") != TOKEN or cp.token_used:
                            self._problem(401, "unauthenticated", "join token invalid or used")
                            return
                        cp.token_used = True
                        cp.registrations.append(obj)
                        self._send(201, {"host_id": "h1", "credential": CREDENTIAL})
                        return
                    if not self._authed():
                        return
                    if self.path == "/api/v1/agent/heartbeat":
                        cp.calls["heartbeat"] += 1
                        obj = json.loads(body)
                        cp.heartbeats.append(obj)
                        self._send(200, cp.on_heartbeat(obj))
                        return
                    if parts[:4] == ["api", "v1", "agent", "computations"] and parts[5:] == [
                        "events"
                    ]:
                        cp.calls["events"] += 1
                        comp = cp.comps.get(parts[4])
                        if comp is None:
                            self._problem(404, "not-found", "no such computation")
                            return
                        for ev in json.loads(body)["events"]:
                            if ev["seq"] in comp.events:
                                cp.duplicate_events += 1
                            comp.events.setdefault(ev["seq"], ev)
                        self._send(204)
                        return
                self._problem(404, "not-found", self.path)

            def do_PUT(self) -> None:
                body = self._body()
                parts = self.path.strip("/").split("/")
                with cp.lock:
                    if not self._authed():
                        return
                    if parts[:4] == ["api", "v1", "agent", "computations"] and parts[5] == "blobs":
                        cp.calls["blob"] += 1
                        comp = cp.comps.get(parts[4])
                        if comp is None:
                            self._problem(404, "not-found", "no such computation")
                            return
                        if hashlib.sha256(body).hexdigest() != self.headers.get(
                            "X-Sealroom-Sha256"
                        ):
                            self._problem(400, "invalid-input", "sha mismatch")
                            return
                        comp.blobs[parts[6]] = body
                        self._send(204)
                        return
                self._problem(404, "not-found", self.path)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """An outage: the listener goes, and so do open keep-alive connections (as when a
        real control plane process dies)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    # ---- the contract's heartbeat semantics (simplified) ------------------------------
    def on_heartbeat(self, obj: dict[str, Any]) -> dict[str, Any]:
        hb = Heartbeat.model_validate(obj)
        reported = set()
        for e in hb.enclaves:
            cid = e.computation_id
            reported.add(cid)
            comp = self.comps.get(cid)
            if comp is None:
                continue
            comp.stats = e.stats
            if e.endpoint and not comp.state.final:
                comp.endpoint = e.endpoint
            for t in e.transitions:
                verdict = judge_report(comp.state, t.state)
                if verdict is Verdict.REFUSED:
                    self.refused.append((cid, comp.state, t.state))
                    break
                if verdict is Verdict.APPLY:
                    comp.state, comp.reason = t.state, t.reason
                    comp.history.append(t.state)
        desired = []
        for cid, comp in self.comps.items():
            if comp.state not in OUTCOMES and comp.state != State.DESTROYED:
                desired.append(
                    Desired(computation_id=cid, action="run", manifest=comp.manifest, tee=comp.tee)
                )
            elif cid in reported:
                desired.append(Desired(computation_id=cid, action="stop"))
        reply = HeartbeatReply(desired=desired, heartbeat_interval=self.heartbeat_interval)
        return reply.model_dump(mode="json")

    def add(self, cid: str, manifest: dict[str, Any]) -> None:
        with self.lock:
            self.comps[cid] = Comp(manifest=manifest)

    def cancel(self, cid: str) -> None:
        with self.lock:
            self.comps[cid].state = State.FAILED
            self.comps[cid].reason = "cancelled by admin"
