"""`python -m sealroom.controlplane` as a real process: bootstrap key printed once and
written 0600, JSON log lines without secrets, and kill -9 + restart loses nothing."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sealroom.crypto.keys import PartyKeys
from sealroom.testing.postgres import free_port
from tests.controlplane.reports import reached

from .conftest import manifest_doc


class Proc:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.stderr = data_dir.parent / f"stderr-{time.monotonic_ns()}.log"
        self._f = self.stderr.open("wb")
        self.p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sealroom.controlplane",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._f,
            env={k: v for k, v in os.environ.items() if k != "SEALROOM_ADMIN_KEY"},
        )
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.p.poll() is not None:
                raise RuntimeError(self.stderr.read_text())
            time.sleep(0.05)

    def kill9(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()
        self._f.close()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            self.p.wait()
        self._f.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def test_kill9_and_restart_loses_nothing(
    tmp_path: Path, procs: list[Proc], parties: dict[str, PartyKeys]
) -> None:
    data = tmp_path / "cp"
    port = free_port()
    p1 = Proc(data, port)
    procs.append(p1)
    keyfile = data / "bootstrap-admin-key"
    assert keyfile.stat().st_mode & 0o777 == 0o600
    admin = keyfile.read_text().strip()
    h = {"Authorization": f"Bearer {admin}"}
    tok = httpx.post(p1.url + "/api/v1/hosts/join-tokens", headers=h).json()["token"]
    reg = httpx.post(
        p1.url + "/api/v1/agent/register",
        json={
            "join_token": tok,
            "name": "h1",
            "tee_kinds": ["sim"],
            "resources": {"cpu_total": 2, "memory_mb_total": 4096},
        },
    ).json()
    cred = reg["credential"]
    cid = httpx.post(
        p1.url + "/api/v1/computations", json={"manifest": manifest_doc(parties)}, headers=h
    ).json()["id"]
    hb = {"resources": {}, "enclaves": [reached(cid, "running")]}
    ah = {"Authorization": f"Bearer {cred}"}
    assert httpx.post(p1.url + "/api/v1/agent/heartbeat", json=hb, headers=ah).status_code == 200
    p1.kill9()

    p2 = Proc(data, port)
    procs.append(p2)
    d = httpx.get(p2.url + f"/api/v1/computations/{cid}", headers=h).json()
    assert d["state"] == "running" and d["events_count"] == 5  # created .. running
    # the agent reconnects with the same credential; a repeated report writes nothing
    r = httpx.post(p2.url + "/api/v1/agent/heartbeat", json=hb, headers=ah)
    assert [x["computation_id"] for x in r.json()["desired"]] == [cid]
    done = {"resources": {}, "enclaves": [reached(cid, "failed", "exit code 1")]}
    httpx.post(p2.url + "/api/v1/agent/heartbeat", json=done, headers=ah)
    assert httpx.get(p2.url + f"/api/v1/computations/{cid}", headers=h).json()["state"] == "failed"
    p2.stop()

    # stderr is not a terminal here: the key is never printed, only where it is (first
    # start only); logs are JSON lines without secrets
    first, second = p1.stderr.read_text(), p2.stderr.read_text()
    assert admin not in first and admin not in second
    assert str(keyfile) in first and str(keyfile) not in second
    for line in second.splitlines():
        rec = json.loads(line)
        assert "message" in rec and "level" in rec
    assert cred not in first + second
    logged = [x for x in first.splitlines() if x.startswith("{")]
    assert logged and all(admin not in x for x in logged)


def test_cli_serve_command_options() -> None:
    from typer.testing import CliRunner

    from sealroom.cli.controlplane_cmd import controlplane_app

    r = CliRunner().invoke(controlplane_app, ["serve", "--help"])
    assert r.exit_code == 0
    for opt in (
        "--data-dir",
        "--host",
        "--port",
        "--db",
        "--agent-timeout",
        "--quota-computations",
        "--quota-vcpus",
        "--quota-memory-mb",
    ):
        assert opt in r.output


def _register(url: str, admin: str, name: str, cpus: int) -> str:
    h = {"Authorization": f"Bearer {admin}"}
    tok = httpx.post(url + "/api/v1/hosts/join-tokens", headers=h).json()["token"]
    reg = httpx.post(
        url + "/api/v1/agent/register",
        json={
            "join_token": tok,
            "name": name,
            "tee_kinds": ["sim"],
            "resources": {"cpu_total": cpus, "memory_mb_total": 8192},
        },
    )
    assert reg.status_code == 201, reg.text
    cred: str = reg.json()["credential"]
    return cred


def _stream_put(
    url: str, path: str, headers: dict[str, str], declared: int, cap: int
) -> tuple[int, int]:
    """PUT ``declared`` bytes over a raw socket, 1 MiB at a time, stopping as soon as the
    server answers (or after ``cap`` bytes). Returns (HTTP status or 0, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    head = f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    chunk = b"\0" * (1 << 20)
    sent = 0
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head.encode())
        try:
            while sent < cap and not select.select([sock], [], [], 0)[0]:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed early: its answer says why
        if not select.select([sock], [], [], 30)[0]:
            return 0, sent
        first = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(first.split()[1]), sent


def test_rogue_agent_blob_upload_refused_before_body(
    tmp_path: Path, procs: list[Proc], parties: dict[str, PartyKeys]
) -> None:
    """A host uploading a 1.5 GiB 'result' for a computation that is not placed on it is
    refused from the path and headers alone: the 403 arrives before the body, nothing
    of it is kept, and the control plane's memory does not grow with it. The placed host
    is held to the manifest's bound and to a declared length."""
    data = tmp_path / "cp"
    p = Proc(data, free_port())
    procs.append(p)
    admin = (data / "bootstrap-admin-key").read_text().strip()
    placed = _register(p.url, admin, "h1", 8)
    rogue = _register(p.url, admin, "h2", 1)
    cid = httpx.post(
        p.url + "/api/v1/computations",
        json={"manifest": manifest_doc(parties, vcpus=2)},
        headers={"Authorization": f"Bearer {admin}"},
    ).json()["id"]
    path = f"/api/v1/agent/computations/{cid}/blobs/result.alice"
    sha = {"X-Sealroom-Sha256": "00" * 32}
    rss_before = _rss_mb(p.p.pid)

    status, sent = _stream_put(
        p.url, path, {"Authorization": f"Bearer {rogue}", **sha}, 3 << 29, cap=256 << 20
    )
    assert status == 403, f"no refusal after {sent >> 20} MiB of a 1.5 GiB body"
    assert sent < 64 << 20
    # the placed host: more than the manifest allows is refused before the body too
    status, sent = _stream_put(
        p.url, path, {"Authorization": f"Bearer {placed}", **sha}, 3 << 29, cap=256 << 20
    )
    assert status == 413 and sent < 64 << 20
    # no declared length (chunked): 411, nothing read
    r = httpx.put(
        p.url + path,
        content=iter([b"x" * 10]),
        headers={"Authorization": f"Bearer {placed}", **sha},
    )
    assert r.status_code == 411 and r.json()["type"] == "length-required"
    assert _rss_mb(p.p.pid) - rss_before < 100
    assert not [f for f in (data / "blobs").rglob("*") if f.is_file()]
    # within the bound: stored
    body = b"sealed bytes"
    r = httpx.put(
        p.url + path,
        content=body,
        headers={
            "Authorization": f"Bearer {placed}",
            "X-Sealroom-Sha256": hashlib.sha256(body).hexdigest(),
        },
    )
    assert r.status_code == 204, r.text
    assert (data / "blobs" / cid / "result.alice").read_bytes() == body


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
