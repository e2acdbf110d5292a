"""A key broker on a real socket (uvicorn in a thread), a sim authority, a guest evidence
function and admin helpers."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from sealroom.attestation.ear import VerifierKey
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.kbs.client import envelope_evidence, report_data
from sealroom.kbs.seams import AuditEvent, ReleaseContext
from sealroom.kbs.server import create_app, hash_admin_key
from sealroom.kbs.store import Store
from sealroom.kbs.verify import Verifier
from sealroom.testing.postgres import free_port

MEASUREMENT = hashlib.sha384(b"kbs test guest").digest()

SIM_POLICY = f"""version: 1
id: kbs-sim
allow_simulated: true
snp:
  measurements: ['{MEASUREMENT.hex()}']
"""

REAL_ONLY_POLICY = f"""version: 1
id: kbs-real-only
allow_simulated: false
snp:
  measurements: ['{MEASUREMENT.hex()}']
"""

RESOURCE_POLICY = """version: 1
id: test-release
rules:
  - resources: "default/key/*"
    status: warning          # sim evidence is never "affirming" hardware (AR4SI)
    allow_simulated: true
    kinds: [snp]
"""


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def serve(app: FastAPI) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, t


@dataclass
class Kbs:
    url: str
    admin_key: str
    authority: SimAuthority
    clock: Clock
    store: Store
    audit: list[AuditEvent] = field(default_factory=list)
    guard_calls: list[ReleaseContext] = field(default_factory=list)
    refuse_with: list[str] = field(default_factory=list)

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=30
        )

    def set_attestation_policy(self, text: str) -> None:
        with self.admin() as c:
            r = c.post(
                "/kbs/v0/attestation-policy",
                json={"type": "sealroom", "policy_id": "default", "policy": b64url(text)},
            )
            assert r.status_code == 200, r.text

    def set_resource_policy(self, text: str) -> None:
        with self.admin() as c:
            r = c.post("/kbs/v0/resource-policy", json={"policy": b64url(text)})
            assert r.status_code == 200, r.text

    def put(self, path: str, value: bytes) -> None:
        with self.admin() as c:
            r = c.post(f"/kbs/v0/resource/{path}", content=value)
            assert r.status_code == 200, r.text

    def evidence(self, measurement: bytes = MEASUREMENT) -> Callable[[bytes], Any]:
        def fn(digest: bytes) -> Any:
            rep = self.authority.report(measurement=measurement, report_data=report_data(digest))
            return envelope_evidence(EvidenceBundle.single(self.authority.evidence(rep)))

        return fn


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def make_kbs(tmp_path: Path, db_url: str | None = None) -> tuple[Kbs, FastAPI]:
    authority = SimAuthority.ephemeral()
    clock = Clock()
    store = Store(db_url or f"sqlite:///{tmp_path / 'kbs.db'}")
    admin_key = secrets.token_urlsafe(32)
    kbs = Kbs("", admin_key, authority, clock, store)

    def guard(ctx: ReleaseContext) -> None:
        from sealroom.kbs.seams import ReleaseRefused

        kbs.guard_calls.append(ctx)
        if kbs.refuse_with:
            raise ReleaseRefused(kbs.refuse_with[0])

    app = create_app(
        store,
        Verifier(VerifierKey.generate(), extra_roots=(authority.root,), clock=clock),
        admin_key_hashes=[hash_admin_key(admin_key)],
        guards=[guard],
        audit=[kbs.audit.append],
    )
    return kbs, app


@pytest.fixture
def kbs(tmp_path: Path) -> Iterator[Kbs]:
    k, app = make_kbs(tmp_path)
    url, server, t = serve(app)
    k.url = url
    k.set_attestation_policy(SIM_POLICY)
    k.set_resource_policy(RESOURCE_POLICY)
    k.put("default/key/one", b"the released secret")
    yield k
    server.should_exit = True
    t.join(timeout=30)
    k.store.close()
