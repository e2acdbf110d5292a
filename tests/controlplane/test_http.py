"""The control plane over real HTTP (uvicorn on 127.0.0.1): concurrent create requests
against a host with room for exactly N: exactly N succeed, the rest get 429."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from sealroom.controlplane.app import create_app
from sealroom.controlplane.config import Settings
from sealroom.crypto.keys import PartyKeys
from sealroom.testing.postgres import free_port

from .conftest import manifest_doc

ADMIN = "srk_http-test-admin-key-0123456789abcdef"


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[str]:
    app = create_app(
        Settings(
            data_dir=tmp_path / "cp", db_url=db_url, admin_key=ADMIN, print_bootstrap_key=False
        )
    )
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    while not srv.started:
        if not t.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        t.join()


def _register_host(server: str, cpus: int) -> None:
    h = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=server, timeout=60) as c:
        tok = c.post("/api/v1/hosts/join-tokens", headers=h).json()["token"]
        r = c.post(
            "/api/v1/agent/register",
            json={
                "join_token": tok,
                "name": "h1",
                "tee_kinds": ["sim"],
                "resources": {"cpu_total": cpus, "memory_mb_total": 1 << 20},
            },
        )
        assert r.status_code == 201


def test_concurrent_http_creates_exactly_n_succeed(
    server: str, parties: dict[str, PartyKeys]
) -> None:
    h = {"Authorization": f"Bearer {ADMIN}"}
    _register_host(server, cpus=6)
    doc = manifest_doc(parties)

    def create(_: int) -> tuple[int, Any]:
        with httpx.Client(base_url=server, timeout=60) as c:
            r = c.post("/api/v1/computations", json={"manifest": doc}, headers=h)
            return r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=12) as ex:
        results = list(ex.map(create, range(24)))
    codes = sorted(code for code, _ in results)
    assert codes == [201] * 6 + [429] * 18
    assert all(body["type"] == "capacity" for code, body in results if code == 429)
    with httpx.Client(base_url=server, timeout=60) as c:
        hosts = c.get("/api/v1/hosts", headers=h).json()["hosts"]
        assert hosts[0]["resources"]["cpu_used"] == 6


def test_follow_missed_the_final_event_reached_while_reading_events(
    server: str, parties: dict[str, PartyKeys]
) -> None:
    """`computation events --follow` read the events, then the state; a computation that
    ended in between was returned as final without its last event (CI saw `failed` missing
    from a followed run). Here the computation is cancelled while the follower holds the
    first page of events: the follower must still print the cancellation."""
    from sealroom.client.controlplane import ControlPlaneClient

    h = {"Authorization": f"Bearer {ADMIN}"}
    _register_host(server, cpus=2)
    with httpx.Client(base_url=server, timeout=60) as c:
        r = c.post("/api/v1/computations", json={"manifest": manifest_doc(parties)}, headers=h)
        assert r.status_code == 201, r.text
    cid = r.json()["id"]
    client = ControlPlaneClient(server, ADMIN)
    seen: list[tuple[str, str | None]] = []

    def on_event(ev: Any) -> None:
        if not seen:
            client.cancel(cid)  # ends it between the follower's two reads
        seen.append((ev.type, ev.state))

    done = client.wait_for(cid, (), 60, on_event=on_event)
    assert done.state.value == "failed"
    assert seen[-1][1] == "failed", seen


def test_host_drain_and_remove_through_the_cli(server: str, tmp_path: Path) -> None:
    """`sealroom host drain NAME`, `host list` showing it, `host drain --undo`, `host
    remove NAME` against a control plane over HTTP."""
    import json
    import os
    import subprocess
    import sys

    _register_host(server, cpus=2)
    env = {
        **os.environ,
        "SEALROOM_HOME": str(tmp_path / "home"),
        "SEALROOM_URL": server,
        "SEALROOM_API_KEY": ADMIN,
        "COLUMNS": "200",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sealroom.cli.main", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    r = cli("host", "drain", "h1")
    assert r.returncode == 0 and "draining" in r.stdout, r.stderr
    [h] = json.loads(cli("host", "list", "--json").stdout)
    assert h["draining"] is True
    r = cli("host", "drain", "h1", "--undo", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["draining"] is False, r.stderr
    r = cli("host", "remove", "h1")
    assert r.returncode == 0 and "removed" in r.stdout, r.stderr
    assert json.loads(cli("host", "list", "--json").stdout) == []
    r = cli("host", "remove", "h1", "--json")
    assert r.returncode == 1 and json.loads(r.stderr)["error"] == "not-found", r.stderr
