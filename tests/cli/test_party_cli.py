"""The README's three-party computation, step by step, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ._party import cli, failing_workspace, needs_bwrap, upload_all

pytestmark = needs_bwrap


@contextmanager
def running_enclave(workspace: Path, env: dict[str, str]) -> Iterator[str]:
    """`sealroom enclave run` for the workspace's manifest.json; yields its URL."""
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
    try:
        info = json.loads(proc.stdout.readline())
        assert info["simulated"] is True
        yield str(info["url"])
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def enclave_url(workspace: Path, env: dict[str, str]) -> Iterator[str]:
    with running_enclave(workspace, env) as url:
        yield url


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


def test_result_on_failed_run_shows_log_and_reason(workspace: Path, env: dict[str, str]) -> None:
    w = failing_workspace(workspace, env)
    with running_enclave(w, env) as url:
        upload_all(url, env=env, cwd=w)
        r = cli(
            "result", url, "--manifest", "manifest.json", "--key", "analyst", "-o", "out",
            "--receipt", "receipt.json", "--wait", "60",
            env=env, cwd=w,
        )  # fmt: skip
        # Its own exit status and error code, not "not-finished"; the log first.
        assert r.returncode == 5, r.stdout + r.stderr
        assert "[run-failed]: failed: the algorithm exited with a non-zero status" in r.stderr
        assert "clinic-a holds 40" in r.stdout
        assert "giving up: no such module" in r.stdout
        assert "ModuleNotFoundError" in r.stdout and "detail: exit 1" in r.stdout
        assert not (w / "out").exists()
        # The log reader the manifest names (the algorithm provider) reads it too.
        r = cli("run-log", url, "--manifest", "manifest.json", "--key", "lab", env=env, cwd=w)
        assert r.returncode == 5 and "giving up: no such module" in r.stdout, r.stderr
        # A data provider the manifest does not name as a reader gets nothing.
        r = cli("run-log", url, "--manifest", "manifest.json", "--key", "clinic-a", env=env, cwd=w)
        assert r.returncode == 1 and "may not read the run log" in r.stderr
        assert "giving up" not in r.stdout + r.stderr
    # The failed run's receipt verifies offline and says so.
    r = cli("receipt", "verify", "receipt.json", "--manifest", "manifest.json", env=env, cwd=w)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAILED: the algorithm exited with a non-zero status" in r.stdout
    assert "sealed run log for lab" in r.stdout and "sealed run log for analyst" in r.stdout
    r = cli(
        "receipt", "verify", "receipt.json", "--manifest", "manifest.json", "--json", env=env, cwd=w
    )
    out = json.loads(r.stdout)
    assert out["valid"] and out["exit"]["ok"] is False and set(out["logs"]) == {"analyst", "lab"}


def test_manifest_init_from_directories_runs_as_uploaded(
    workspace: Path, env: dict[str, str]
) -> None:
    """Issue 15: `manifest init` takes an algorithm directory (a package with its own
    modules) and a dataset directory; it names them by the hash of the tar `upload` sends
    (what `sealroom checksum` prints), the enclave unpacks them, and the limits come from
    flags."""
    w = workspace
    (w / "alg").mkdir()
    (w / "alg" / "helpers.py").write_text("def total(xs):\n    return sum(xs)\n")
    (w / "alg" / "run.py").write_text(
        "import pathlib\nfrom helpers import total\n"
        "d = pathlib.Path('/inputs/clinic-a')\n"
        "xs = [int(p.read_text()) for p in sorted(d.iterdir())]\n"
        "xs.append(int(pathlib.Path('/inputs/clinic-b').read_text()))\n"
        "pathlib.Path('/results/sum.txt').write_text(str(total(xs)))\n"
    )
    (w / "ds").mkdir()
    (w / "ds" / "1.txt").write_text("30")
    (w / "ds" / "2.txt").write_text("10")
    r = cli(
        "manifest", "init", "--algorithm-key", "lab", "--algorithm", "alg",
        "--entrypoint", "run.py", "--dataset", "clinic-a:clinic-a:ds",
        "--dataset", "clinic-b:clinic-b:b.txt", "--consumer", "analyst", "--tee", "sim",
        "--vcpus", "1", "--memory-mb", "256", "--wall-seconds", "120",
        "--max-result-bytes", "65536", "--out", "manifest.json", "--force",
        env=env, cwd=w,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads((w / "manifest.json").read_text())
    r = cli("checksum", "alg", "ds", "b.txt", "--json", env=env, cwd=w)
    assert r.returncode == 0, r.stderr
    sums = {e["path"]: e for e in json.loads(r.stdout)}
    alg, ds = doc["algorithm"], {d["name"]: d for d in doc["datasets"]}
    assert (alg["sha256"], alg["archive"], alg["entrypoint"]) == (
        sums["alg"]["sha256"], "tar", "run.py"
    )  # fmt: skip
    assert (ds["clinic-a"]["sha256"], ds["clinic-a"]["archive"]) == (sums["ds"]["sha256"], "tar")
    assert ds["clinic-b"]["archive"] is None and sums["b.txt"]["archive"] is None
    assert doc["limits"] == {
        "vcpus": 1, "memory_mb": 256, "wall_seconds": 120, "max_result_bytes": 65536
    }  # fmt: skip
    with running_enclave(w, env) as url:
        for path, slot, key in (("alg", "algorithm", "lab"), ("ds", "clinic-a", "clinic-a")):
            r = cli(
                "upload", url, path, "--manifest", "manifest.json", "--slot", slot,
                "--key", key, env=env, cwd=w,
            )  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr
        r = cli(
            "upload", url, "b.txt", "--manifest", "manifest.json", "--slot", "clinic-b",
            "--key", "clinic-b", env=env, cwd=w,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        r = cli(
            "result", url, "--manifest", "manifest.json", "--key", "analyst", "-o", "out",
            "--wait", "60", env=env, cwd=w,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
    assert (w / "out" / "sum.txt").read_text() == "42"
