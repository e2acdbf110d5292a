"""The README's three-party computation, step by step, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._party import cli, needs_bwrap, upload_all

pytestmark = needs_bwrap


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
    upload_all(url, env=env, cwd=w)
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
