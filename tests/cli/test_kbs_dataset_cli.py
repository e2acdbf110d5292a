"""The README's "data that never travels in clear" flow, step by step, through the real CLI:
the provider encrypts under a KMS key and deletes its plaintext; `sealroom kbs serve`
serves that KMS; the manifest names the slot KBS-sourced; the broker's policies release
the key only to this computation's enclave; the enclave fills the slot itself."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sealroom.testing.postgres import free_port
from tests.cli.test_party_cli import running_enclave

from ._party import needs_bwrap, runner

pytestmark = needs_bwrap


def test_readme_kbs_sourced_dataset_flow(workspace: Path, env: dict[str, str]) -> None:
    w = workspace

    run = runner(env, w)
    run("kms", "init", "--admin", "lab")
    run("kms", "key", "create", "ds-a", "--account", "clinic-a")
    out = run("data", "encrypt", "a.txt", "--key-id", "ds-a", "--out", "a.txt.enc")
    sha = next(x.split()[1] for x in out.splitlines() if x.startswith("sha256 "))
    (w / "a.txt").unlink()  # the provider keeps nothing in clear; it is offline from here

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (w / "kbs.log").open("wb") as log:
        serve = ["kbs", "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", "kbs"]
        kbs = subprocess.Popen(
            [sys.executable, "-m", "sealroom.cli.main", *serve],
            cwd=w,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120  # a bound for a stuck start, not a speed check
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert kbs.poll() is None and time.monotonic() < deadline, (w / "kbs.log").read_text()
            time.sleep(0.2)
        assert "KMS" in (w / "kbs.log").read_text()

        run(
            "manifest", "init", "--algorithm-key", "lab", "--algorithm", "main.py",
            "--kbs-url", url, "--kbs-dataset", f"clinic-a:clinic-a:{sha}:a.txt.enc",
            "--dataset", "clinic-b:clinic-b:b.txt", "--consumer", "analyst", "--tee", "sim",
            "--out", "manifest.json", "--force",
        )  # fmt: skip
        run(
            "manifest", "kbs-policy", "manifest.json",
            "--release", "release.json", "--attestation", "enclave.json",
        )  # fmt: skip
        admin = ["--url", url, "--admin-key", "kbs/admin.key"]
        run("kbs", "policy", "set", "enclave.json", "--attestation", *admin)
        run("kbs", "policy", "set", "release.json", *admin)

        with running_enclave(w, env) as enclave:
            up = ["upload", enclave, "--manifest", "manifest.json"]
            run(*up[:2], "main.py", *up[2:], "--slot", "algorithm", "--key", "lab")
            run(*up[:2], "b.txt", *up[2:], "--slot", "clinic-b", "--key", "clinic-b")
            refused = run(
                *up[:2], "a.txt.enc", *up[2:], "--slot", "clinic-a", "--key", "clinic-a", rc=1
            )
            assert "key broker" in refused
            run(
                "result", enclave, "--manifest", "manifest.json", "--key", "analyst",
                "-o", "out", "--receipt", "receipt.json", "--wait", "60",
            )  # fmt: skip
        assert (w / "out" / "sum.txt").read_text() == "42"
        run("receipt", "verify", "receipt.json", "--manifest", "manifest.json")
        run("kms", "audit", "export", "audit.jsonl")
        run("kms", "audit", "verify", "audit.jsonl")
        lines = (w / "audit.jsonl").read_text().splitlines()
        released = [json.loads(x)["event"] for x in lines if '"release"' in x]
        assert [(e["key_id"], e["version"]) for e in released] == [("ds-a", 1)]
    finally:
        kbs.terminate()
        kbs.wait(30)
