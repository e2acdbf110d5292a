"""The README's "whole system on one machine" section, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from ._party import cli, failing_workspace, needs_bwrap, upload_all

pytestmark = needs_bwrap


def test_readme_stack_flow(workspace: Path, env: dict[str, str]) -> None:
    w = workspace
    r = cli("up", "--json", env=env, cwd=w)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        up = json.loads(r.stdout)
        assert up["url"].startswith("http://127.0.0.1:")
        # `sealroom up` also runs the key broker; the kbs commands find it and its key
        assert up["kbs_url"].startswith("http://127.0.0.1:")
        # and the control plane names that attestation service as its verification_service
        att = httpx.get(f"{up['url']}/api/v1/compute/attestation", timeout=30).json()
        assert att["verification_service"] == up["kbs_url"] + "/api/v1/attestation/verify"
        r = cli("kbs", "resource", "list", env=env, cwd=w)
        assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
        r = cli("host", "list", "--json", env=env, cwd=w)
        hosts = json.loads(r.stdout)
        assert r.returncode == 0 and len(hosts) == 1 and hosts[0]["state"] == "online"
        # what the host registered with is its word until evidence from it verified
        r = cli("host", "list", env=env, cwd=w)
        assert r.returncode == 0 and "sim (claimed)" in r.stdout, r.stdout
        r = cli("computation", "create", "manifest.json", "--wait", "90", "--json", env=env, cwd=w)
        assert r.returncode == 0, r.stdout + r.stderr
        comp = json.loads(r.stdout)
        assert comp["state"] == "awaiting_inputs" and comp["enclave_url"]
        url = comp["enclave_url"]
        r = cli("enclave", "verify", url, "--manifest", "manifest.json", env=env, cwd=w)
        assert r.returncode == 0 and "SIMULATED" in r.stdout, r.stdout + r.stderr
        upload_all(url, env=env, cwd=w)
        r = cli("computation", "events", comp["id"], "--follow", "--json", env=env, cwd=w)
        assert r.returncode == 0, r.stderr
        states = [json.loads(line).get("state") for line in r.stdout.splitlines() if line]
        assert "completed" in states, states
        out = w / "out"
        # --wait: until the run ended and its receipt is stored (no retry loop needed)
        r = cli("computation", "result", comp["id"], "--manifest", "manifest.json", "--key",
                "analyst", "-o", str(out), "--wait", "60", "--receipt", "receipt.json",
                env=env, cwd=w)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        r = cli("receipt", "verify", "receipt.json", "--manifest", "manifest.json", env=env, cwd=w)
        assert r.returncode == 0, r.stdout + r.stderr
        r = cli("computation", "show", comp["id"], env=env, cwd=w)
        assert r.returncode == 0 and "status: completed" in r.stdout, r.stdout
        for slot in ("algorithm", "clinic-a", "clinic-b"):
            assert f"{slot}: filled" in r.stdout, r.stdout
        assert (out / "sum.txt").read_text() == "42"
        r = cli("host", "list", env=env, cwd=w)
        assert "sim (verified)" in r.stdout and "claimed" not in r.stdout, r.stdout
        # the operator's view: the stack's logs, about this computation only; what the
        # algorithm printed and the keys are not in them
        r = cli("logs", "--computation", comp["id"], "-n", "1000", "--json", env=env, cwd=w)
        assert r.returncode == 0, r.stderr
        recs = [json.loads(line) for line in r.stdout.splitlines()]
        # the control plane's JSON records by field; the agent's text lines by mention
        assert recs and all(
            x.get("computation_id") == comp["id"] or comp["id"] in x.get("text", "") for x in recs
        ), recs
        assert "completed" in {x.get("state") for x in recs if x["component"] == "controlplane"}
        r = cli("logs", "-n", "100000", env=env, cwd=w)
        assert "controlplane" in r.stdout and "agent-1" in r.stdout, r.stdout
        assert up["admin_key"] not in r.stdout and "42" not in r.stdout.split()
        assert cli("logs", "nosuch", env=env, cwd=w).returncode == 1
        r = cli(
            "computation",
            "result",
            comp["id"],
            "--manifest",
            "manifest.json",
            "--key",
            "mallory",
            "-o",
            str(w / "stolen"),
            env=env,
            cwd=w,
        )
        assert r.returncode == 1 and not (w / "stolen").exists()
        r = cli("computation", "list", "--json", env=env, cwd=w)
        assert [c["id"] for c in json.loads(r.stdout)] == [comp["id"]]
    finally:
        r = cli("down", env=env, cwd=w)
    assert r.returncode == 0 and "stack stopped" in r.stdout


def test_computation_result_on_failed_run_shows_log_via_control_plane(
    workspace: Path, env: dict[str, str]
) -> None:
    """Issue 9, defect 2 on the control-plane path: the agent uploads the sealed logs with
    the receipt; `sealroom computation result` shows the log and says failed (exit 5)."""
    w = failing_workspace(workspace, env)
    r = cli("up", "--json", env=env, cwd=w)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        r = cli("computation", "create", "manifest.json", "--wait", "90", "--json", env=env, cwd=w)
        assert r.returncode == 0, r.stdout + r.stderr
        comp = json.loads(r.stdout)
        upload_all(comp["enclave_url"], env=env, cwd=w)
        r = cli("computation", "events", comp["id"], "--follow", "--json", env=env, cwd=w)
        lines = [json.loads(line) for line in r.stdout.splitlines() if line]
        assert "failed" in [e.get("state") for e in lines], lines
        assert "giving up" not in r.stdout and "clinic-a holds" not in r.stdout
        args = ("--manifest", "manifest.json", "-o", str(w / "out"), "--wait", "60")
        r = cli("computation", "result", comp["id"], *args, "--key", "analyst", env=env, cwd=w)
        assert r.returncode == 5, r.stdout + r.stderr
        assert "[run-failed]: failed: the algorithm exited with a non-zero status" in r.stderr
        assert "clinic-a holds 40" in r.stdout and "giving up: no such module" in r.stdout
        assert "ModuleNotFoundError" in r.stdout and not (w / "out").exists()
        # The algorithm provider, named as a log reader, reads the same log.
        r = cli("computation", "log", comp["id"], "--manifest", "manifest.json", "--key", "lab",
                env=env, cwd=w)  # fmt: skip
        assert r.returncode == 5 and "giving up: no such module" in r.stdout, r.stderr
        # A data provider that is not a log reader, and an outsider, get nothing.
        for who in ("clinic-a", "mallory"):
            r = cli("computation", "log", comp["id"], "--manifest", "manifest.json", "--key", who,
                    env=env, cwd=w)  # fmt: skip
            assert r.returncode == 1 and "giving up" not in r.stdout + r.stderr, r.stderr
    finally:
        r = cli("down", env=env, cwd=w)
    assert r.returncode == 0


def test_accounts_login_and_cancel_through_the_cli(workspace: Path, env: dict[str, str]) -> None:
    """`sealroom account ...`, `sealroom login URL` with the key on stdin (never argv),
    `computation show` slots while waiting, `cancel` printing cancelled."""
    w = workspace
    r = cli("up", "--json", env=env, cwd=w)
    assert r.returncode == 0, r.stdout + r.stderr
    url = json.loads(r.stdout)["url"]
    try:
        r = cli("account", "create", "hospital-a", "--json", env=env, cwd=w)
        assert r.returncode == 0, r.stderr
        acc = json.loads(r.stdout)
        r = cli("account", "key", "create", "hospital-a", env=env, cwd=w)
        assert r.returncode == 0 and r.stdout.startswith("srk_"), r.stdout + r.stderr
        key = r.stdout.strip()
        key_id = r.stderr.split("key id ", 1)[1].split()[0]
        r = cli("account", "list", "--json", env=env, cwd=w)
        assert [a["name"] for a in json.loads(r.stdout)] == ["admin", "hospital-a"]
        # the key from stdin; the CLI now acts as hospital-a
        r = subprocess.run(
            [sys.executable, "-m", "sealroom.cli.main", "login", url],
            input=key + "\n", cwd=w, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0 and "logged in as hospital-a (user)" in r.stdout, r.stderr
        r = cli("account", "list", "--json", env=env, cwd=w)
        assert json.loads(r.stdout) == [acc]
        r = cli("computation", "create", "manifest.json", "--wait", "90", "--json", env=env, cwd=w)
        assert r.returncode == 0, r.stdout + r.stderr
        cid = json.loads(r.stdout)["id"]
        r = cli("computation", "show", cid, env=env, cwd=w)
        assert "status: awaiting_inputs" in r.stdout and "clinic-a: waiting" in r.stdout
        # a data provider of another organisation: no account, its manifest key signs
        args = ("computation", "status", cid, "--manifest", "manifest.json", "--key")
        r = cli(*args, "clinic-b", "--control-plane", url, env=env, cwd=w)
        assert r.returncode == 0 and f"{cid}: awaiting_inputs" in r.stdout, r.stdout + r.stderr
        assert "clinic-b: waiting" in r.stdout
        r = cli(*args, "mallory", "--control-plane", url, env=env, cwd=w)
        assert r.returncode != 0 and "access-denied" in r.stderr, r.stdout + r.stderr
        r = cli("computation", "cancel", cid, env=env, cwd=w)
        assert r.returncode == 0 and r.stdout.strip() == f"{cid}: cancelled", r.stdout
        # revoked: the saved key no longer works, and the error is JSON when asked
        r = subprocess.run(
            [sys.executable, "-m", "sealroom.cli.main", "login", url],
            input=up_key(w, env) + "\n", cwd=w, env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        r = cli("account", "key", "revoke", key_id, env=env, cwd=w)
        assert r.returncode == 0 and "revoked" in r.stdout
        r = subprocess.run(
            [sys.executable, "-m", "sealroom.cli.main", "login", url],
            input=key + "\n", cwd=w, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode != 0 and "revoked" in r.stderr, r.stdout + r.stderr
    finally:
        cli("down", env=env, cwd=w)


def up_key(w: Path, env: dict[str, str]) -> str:
    """The admin key `sealroom up` saved (0600) in its data directory."""
    home = Path(env["SEALROOM_HOME"])
    return (home / "stack" / "controlplane" / "bootstrap-admin-key").read_text().strip()


def test_version_and_json_errors(workspace: Path, env: dict[str, str]) -> None:
    r = cli("--version", env=env, cwd=workspace)
    assert r.returncode == 0 and r.stdout.startswith("sealroom "), r.stdout + r.stderr
    r = cli("attest", "inspect", "missing.bin", "--json", env=env, cwd=workspace)
    assert r.returncode == 1
    err = json.loads(r.stderr.strip().splitlines()[-1])
    assert (
        err["error"] == "invalid-input"
        and err["exit_code"] == 1
        and "missing.bin" in err["message"]
    )
    r = cli("attest", "inspect", "missing.bin", env=env, cwd=workspace)
    assert r.returncode == 1 and r.stderr.startswith("error [invalid-input]")
