"""`sealroom manifest init --kbs-dataset` (a slot the enclave fills from the key broker,
its resource named by the ciphertext's header) and `sealroom manifest kbs-policy` (the
broker's release and attestation policies for that manifest)."""

from __future__ import annotations

import json
from pathlib import Path

from ._party import runner


def test_manifest_kbs_dataset_and_kbs_policy(workspace: Path, env: dict[str, str]) -> None:
    w = workspace

    run = runner(env, w)
    run("kms", "init")
    run("kms", "key", "create", "ds-a", "--account", "clinic-a")
    run("kms", "key", "rotate", "ds-a")
    out = run("data", "encrypt", "a.txt", "--key-id", "ds-a", "--out", "a.txt.enc")
    sha = next(x.split()[1] for x in out.splitlines() if x.startswith("sha256 "))
    base = ["manifest", "init", "--algorithm-key", "lab", "--algorithm", "main.py"]
    tail = ["--consumer", "analyst", "--tee", "sim", "--force"]
    kbs = f"clinic-a:clinic-a:{sha}:a.txt.enc"
    assert "--kbs-url" in run(*base, "--kbs-dataset", kbs, *tail, "--out", "m.json", rc=1)
    url = ["--kbs-url", "http://127.0.0.1:8090/"]
    not_encrypted = run(*base, *url, "--kbs-dataset", f"x:clinic-a:{sha}:b.txt", *tail, rc=1)
    assert "encrypted dataset" in not_encrypted
    run(*base, *url, "--kbs-dataset", kbs, *tail, "--out", "m.json")
    doc = json.loads((w / "m.json").read_text())
    (slot,) = doc["datasets"]
    assert slot["sha256"] == sha and slot["source"]["kbs"] == {
        "url": "http://127.0.0.1:8090",
        "resource": "kms/ds-a/v2",  # the version the ciphertext's header names
        "ciphertext": str(w / "a.txt.enc"),
    }
    run("manifest", "kbs-policy", "m.json", "--release", "r.json", "--attestation", "a.json")
    release = json.loads((w / "r.json").read_text())
    manifest_hash = run("manifest", "hash", "m.json").strip()
    assert release["rules"] == [
        {
            "resources": "kms/ds-a/v2",
            "status": "warning",
            "allow_simulated": True,
            "kinds": ["snp"],
            "claims": {"host_data": [manifest_hash]},
        }
    ]
    attestation = json.loads((w / "a.json").read_text())
    assert "report_data" not in attestation["snp"] and attestation["snp"]["measurements"]
