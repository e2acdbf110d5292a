"""The README's "whole system on one machine" section, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from ._party import cli, needs_bwrap, upload_all

pytestmark = needs_bwrap


def test_readme_stack_flow(workspace: Path, env: dict[str, str]) -> None:
    w = workspace
    r = cli("up", "--json", env=env, cwd=w)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        up = json.loads(r.stdout)
        assert up["url"].startswith("http://127.0.0.1:")
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
        for _ in range(30):  # the agent hands the sealed blobs over right after completion
            r = cli(
                "computation",
                "result",
                comp["id"],
                "--manifest",
                "manifest.json",
                "--key",
                "analyst",
                "-o",
                str(out),
                env=env,
                cwd=w,
            )
            if r.returncode == 0:
                break
        assert r.returncode == 0, r.stdout + r.stderr
        assert (out / "sum.txt").read_text() == "42"
        r = cli("host", "list", env=env, cwd=w)
        assert "sim (verified)" in r.stdout and "claimed" not in r.stdout, r.stdout
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
