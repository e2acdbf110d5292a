"""`sealroom kbs ...` through the real CLI: serve, policies, resources, an attested get."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sealroom.testing.postgres import free_port

from ._party import cli

MEAS = "ab" * 48


@pytest.fixture
def kbs_server(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    # the sim authority must exist before the KBS starts: it trusts its root at start-up
    r = cli("sim", "root", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    port = free_port()
    data = tmp_path / "kbs"
    log = (tmp_path / "kbs.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sealroom.cli.main",
            "kbs",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(data),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "kbs.log"
            ).read_text()
            time.sleep(0.2)
        yield url, data / "admin.key"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    out = (tmp_path / "kbs.log").read_text()
    assert f"admin key: {data / 'admin.key'} (0600)" in out


def test_kbs_cli_flow(kbs_server: tuple[str, Path], tmp_path: Path, env: dict[str, str]) -> None:
    url, key = kbs_server
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    e = {**env, "SEALROOM_KBS_URL": url, "SEALROOM_KBS_ADMIN_KEY": str(key)}
    (tmp_path / "att.yaml").write_text(
        f"version: 1\nid: sim\nallow_simulated: true\nsnp:\n  measurements: ['{MEAS}']\n"
    )
    (tmp_path / "res.yaml").write_text(
        'version: 1\nid: rel\nrules:\n  - resources: "default/key/*"\n'
        "    status: warning\n    allow_simulated: true\n"
    )
    (tmp_path / "secret.bin").write_bytes(b"\x00top secret\xff")
    for args in (
        ("kbs", "policy", "set", "att.yaml", "--attestation"),
        ("kbs", "policy", "set", "res.yaml"),
        ("kbs", "resource", "put", "default/key/k1", "--file", "secret.bin"),
    ):
        r = cli(*args, env=e, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    r = cli("kbs", "policy", "show", env=e, cwd=tmp_path)
    assert r.returncode == 0 and '"id": "rel"' in r.stdout
    r = cli("kbs", "policy", "show", "--attestation", env=e, cwd=tmp_path)
    assert r.returncode == 0 and "allow_simulated: true" in r.stdout
    r = cli("kbs", "resource", "list", env=e, cwd=tmp_path)
    assert "default/key/k1" in r.stdout
    out = tmp_path / "got.bin"
    r = cli(
        "kbs",
        "resource",
        "get",
        "default/key/k1",
        "--out",
        str(out),
        "--measurement",
        MEAS,
        env=e,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SIMULATED" in r.stdout and out.read_bytes() == b"\x00top secret\xff"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    # evidence with another measurement is refused by the attestation policy
    r = cli(
        "kbs",
        "resource",
        "get",
        "default/key/k1",
        "--out",
        str(tmp_path / "no"),
        "--measurement",
        "cd" * 48,
        env=e,
        cwd=tmp_path,
    )
    assert r.returncode != 0 and not (tmp_path / "no").exists()
    assert "AttestationError" in r.stdout + r.stderr
    r = cli("kbs", "resource", "delete", "default/key/k1", env=e, cwd=tmp_path)
    assert r.returncode == 0
    r = cli("kbs", "resource", "list", env=e, cwd=tmp_path)
    assert "default/key/k1" not in r.stdout
    # a wrong admin key is refused
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    r = cli(
        "kbs",
        "resource",
        "put",
        "default/key/x",
        "--file",
        "secret.bin",
        "--admin-key",
        str(bad),
        env=e,
        cwd=tmp_path,
    )
    assert r.returncode != 0 and "AdminAuthAccess" not in r.stdout  # detail, not type
    assert "admin access denied" in r.stdout + r.stderr
