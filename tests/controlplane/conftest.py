"""Control plane fixtures: apps on a temp data dir, a fake clock, manifests, registered
agents, and a real throw-away PostgreSQL cluster for the store tests."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from sealroom.attestation.sim.authority import SimAuthority
from sealroom.controlplane.app import create_app
from sealroom.controlplane.config import Settings
from sealroom.controlplane.state import ControlPlane
from sealroom.crypto.keys import PartyKeys
from sealroom.errors import UnavailableError
from sealroom.manifest import Manifest
from sealroom.testing.postgres import PgCluster, free_port, throwaway_cluster
from sealroom.testing.receipts import sim_receipt
from tests.controlplane.reports import reached


class FakeClock:
    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    try:
        with throwaway_cluster() as cluster:
            yield cluster
    except UnavailableError as e:
        pytest.skip(e.message)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cp.db'}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_db()


# -- apps and clients -------------------------------------------------------------------


@dataclass
class Env:
    client: TestClient
    cp: ControlPlane
    admin_key: str
    clock: FakeClock
    data_dir: Path
    parties: dict[str, PartyKeys] = field(default_factory=dict)
    authority: SimAuthority | None = None  # the sim authority this control plane trusts

    def h(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}

    def user(self, name: str, role: str = "user") -> tuple[str, str]:
        r = self.client.post(
            "/api/v1/accounts", json={"name": name, "role": role}, headers=self.h()
        )
        assert r.status_code == 201, r.text
        acc = r.json()["id"]
        k = self.client.post(f"/api/v1/accounts/{acc}/keys", headers=self.h())
        assert k.status_code == 201, k.text
        return acc, k.json()["key"]

    def join_token(self) -> str:
        r = self.client.post("/api/v1/hosts/join-tokens", headers=self.h())
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    def agent(
        self, name: str = "h1", cpus: int = 4, mem: int = 8192, tee: tuple[str, ...] = ("sim",)
    ) -> tuple[str, str]:
        r = self.client.post(
            "/api/v1/agent/register",
            json={
                "join_token": self.join_token(),
                "name": name,
                "tee_kinds": list(tee),
                "resources": {"cpu_total": cpus, "memory_mb_total": mem, "disk_mb_total": 100000},
            },
        )
        assert r.status_code == 201, r.text
        return r.json()["host_id"], r.json()["credential"]

    def heartbeat(
        self, cred: str, enclaves: list[dict[str, Any]] | None = None, **resources: int
    ) -> dict[str, Any]:
        r = self.client.post(
            "/api/v1/agent/heartbeat",
            json={"resources": resources, "enclaves": enclaves or []},
            headers=self.h(cred),
        )
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def put_blob(self, cred: str, cid: str, name: str, data: bytes) -> Any:
        return self.client.put(
            f"/api/v1/agent/computations/{cid}/blobs/{name}",
            content=data,
            headers={**self.h(cred), "X-Sealroom-Sha256": hashlib.sha256(data).hexdigest()},
        )

    def receipt(self, cid: str, *, ok: bool = True, reason: str = "exit code 0") -> bytes:
        """A receipt as the sim enclave of computation ``cid`` would sign it."""
        assert self.authority is not None
        r = self.client.get(f"/api/v1/computations/{cid}", headers=self.h())
        assert r.status_code == 200, r.text
        doc = sim_receipt(
            Manifest.from_dict(r.json()["manifest"]),
            self.authority,
            ok=ok,
            reason=reason,
            now=self.clock(),
        )
        return json.dumps(doc).encode()

    def complete(self, cred: str, cid: str) -> None:
        """What an honest agent does when a run completed: the receipt, then the report."""
        r = self.put_blob(cred, cid, "receipt", self.receipt(cid))
        assert r.status_code == 204, r.text
        self.heartbeat(cred, [reached(cid, "completed")])

    def create(
        self,
        manifest: dict[str, Any],
        key: str | None = None,
        *,
        queue: bool = False,
        expect: int = 201,
    ) -> dict[str, Any]:
        r = self.client.post(
            "/api/v1/computations",
            json={"manifest": manifest, "tee": "sim", "queue": queue},
            headers=self.h(key),
        )
        assert r.status_code == expect, r.text
        out: dict[str, Any] = r.json()
        return out

    def state(self, cid: str) -> str:
        r = self.client.get(f"/api/v1/computations/{cid}", headers=self.h())
        assert r.status_code == 200, r.text
        s: str = r.json()["state"]
        return s


def manifest_doc(
    parties: dict[str, PartyKeys], *, vcpus: int = 1, memory_mb: int = 512, mid: str = "cp-test"
) -> dict[str, Any]:
    def pub(n: str) -> dict[str, str]:
        return parties[n].public.to_json_obj()

    return {
        "version": 1,
        "id": mid,
        "name": "sum of two private numbers",
        "algorithm": {
            "kind": "python",
            "sha256": "ab" * 32,
            "provider": pub("algo"),
            "entrypoint": "main.py",
            "args": [],
        },
        "datasets": [
            {"name": "a", "sha256": "cd" * 32, "provider": pub("dp1"), "max_size": 1024},
        ],
        "consumers": [pub("alice"), pub("bob")],
        "policy": {"version": 1, "allow_simulated": True, "require": ["snp"], "snp": {"vmpl": [0]}},
        "limits": {
            "vcpus": vcpus,
            "memory_mb": memory_mb,
            "wall_seconds": 30,
            "max_result_bytes": 1 << 20,
        },
    }


@pytest.fixture(scope="session")
def parties() -> dict[str, PartyKeys]:
    return {n: PartyKeys.generate(n) for n in ("algo", "dp1", "alice", "bob", "mallory")}


@pytest.fixture(scope="session")
def sim_authority_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sim") / "sim-authority"
    # valid from before the fake clock's start to years after today
    SimAuthority.load_or_create(d, now=datetime(2025, 12, 1, tzinfo=UTC))
    return d


@pytest.fixture
def make_env(
    tmp_path: Path, parties: dict[str, PartyKeys], sim_authority_dir: Path
) -> Iterator[Callable[..., Env]]:
    made: list[TestClient] = []

    def make(db_url: str | None = None, data_dir: Path | None = None, **kw: Any) -> Env:
        clock = kw.pop("clock", None) or FakeClock()
        d = data_dir or tmp_path / f"cp{len(made)}"
        kw.setdefault("sim_authority", sim_authority_dir)
        # the fake clock starts with the app: tests of lost hosts opt into the grace
        kw.setdefault("startup_grace", 0.0)
        settings = Settings(
            data_dir=d,
            db_url=db_url,
            tick_interval=0,
            clock=clock,
            print_bootstrap_key=False,
            **kw,
        )
        app = create_app(settings)
        client = TestClient(app)
        client.__enter__()
        made.append(client)
        keyfile = d / "bootstrap-admin-key"
        key = keyfile.read_text().strip() if keyfile.exists() else kw.get("admin_key", "")
        authority = SimAuthority.load_or_create(sim_authority_dir)
        return Env(client, app.state.cp, key, clock, d, parties, authority)

    yield make
    for c in made:
        c.__exit__(None, None, None)


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


@pytest.fixture
def live(make_env: Callable[..., Env]) -> Iterator[tuple[Env, str]]:
    env = make_env()
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            env.client.app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    while not srv.started:
        assert t.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield env, f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        t.join()
