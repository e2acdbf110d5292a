"""The README's three-party computation, step by step, through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealroom.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SEALROOM_HOME": str(tmp_path / "home"), "COLUMNS": "200"}


@pytest.fixture
def workspace(tmp_path: Path, env: dict[str, str]) -> Path:
    w = tmp_path / "w"
    w.mkdir()
    (w / "main.py").write_text(
        "import pathlib\n"
        "a = int(pathlib.Path('/inputs/clinic-a').read_text())\n"
        "b = int(pathlib.Path('/inputs/clinic-b').read_text())\n"
        "pathlib.Path('/results/sum.txt').write_text(str(a + b))\n"
    )
    (w / "a.txt").write_text("40")
    (w / "b.txt").write_text("2")
    for name in ("lab", "clinic-a", "clinic-b", "analyst", "mallory"):
        r = cli("keys", "new", name, env=env, cwd=w)
        assert r.returncode == 0, r.stderr
    r = cli(
        "manifest",
        "init",
        "--algorithm-key",
        "lab",
        "--algorithm",
        "main.py",
        "--dataset",
        "clinic-a:clinic-a:a.txt",
        "--dataset",
        "clinic-b:clinic-b:b.txt",
        "--consumer",
        "analyst",
        "--tee",
        "sim",
        "--out",
        "manifest.json",
        env=env,
        cwd=w,
    )
    assert r.returncode == 0, r.stderr
    return w


@pytest.fixture
def enclave_url(workspace: Path, env: dict[str, str]) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sealroom.cli.main",
            "enclave",
            "run",
            "--manifest",
            "manifest.json",
            "--json",
        ],
        cwd=workspace,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    assert info["simulated"] is True
    yield str(info["url"])
    proc.terminate()
    proc.wait(30)


def test_readme_three_party_flow(workspace: Path, env: dict[str, str], enclave_url: str) -> None:
    w, url = workspace, enclave_url
    r = cli("enclave", "verify", url, "--manifest", "manifest.json", env=env, cwd=w)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SIMULATED" in r.stdout and "ACCEPTED (SIMULATED)" in r.stdout
    for path, slot, key in (
        ("main.py", "algorithm", "lab"),
        ("a.txt", "clinic-a", "clinic-a"),
        ("b.txt", "clinic-b", "clinic-b"),
    ):
        r = cli(
            "upload",
            url,
            path,
            "--manifest",
            "manifest.json",
            "--slot",
            slot,
            "--key",
            key,
            env=env,
            cwd=w,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    # a non-consumer is refused (exit 1: access denied), and gets nothing
    r = cli(
        "result",
        url,
        "--manifest",
        "manifest.json",
        "--key",
        "mallory",
        "-o",
        "stolen",
        "--wait",
        "60",
        env=env,
        cwd=w,
    )
    assert r.returncode == 1 and "not a result consumer" in r.stderr
    assert not (w / "stolen").exists()
    r = cli(
        "result",
        url,
        "--manifest",
        "manifest.json",
        "--key",
        "analyst",
        "-o",
        "out",
        "--receipt",
        "receipt.json",
        "--wait",
        "60",
        env=env,
        cwd=w,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (w / "out" / "sum.txt").read_text() == "42"
    r = cli(
        "receipt", "verify", "receipt.json", "--manifest", "manifest.json", "--json", env=env, cwd=w
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["valid"] and out["simulated"] and out["exit"]["ok"]
    # a tampered receipt fails as not authentic (exit 2)
    doc = json.loads((w / "receipt.json").read_text())
    doc["payload"]["results"]["analyst"]["size"] += 1
    (w / "tampered.json").write_text(json.dumps(doc))
    r = cli("receipt", "verify", "tampered.json", "--manifest", "manifest.json", env=env, cwd=w)
    assert r.returncode == 2, r.stdout + r.stderr


def test_upload_by_wrong_party_is_refused(
    workspace: Path, env: dict[str, str], enclave_url: str
) -> None:
    r = cli(
        "upload",
        enclave_url,
        "a.txt",
        "--manifest",
        "manifest.json",
        "--slot",
        "clinic-a",
        "--key",
        "clinic-b",
        env=env,
        cwd=workspace,
    )
    assert r.returncode == 1
    assert "upload-signature-invalid" in r.stderr
