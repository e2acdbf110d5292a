"""`sealroom kms ...` as a user runs it: real processes on a temp SEALROOM_HOME."""

from __future__ import annotations

import json
from pathlib import Path

from ._party import cli


def test_kms_key_lifecycle_audit_lockdown_and_lift(tmp_path: Path, env: dict[str, str]) -> None:
    def run(*args: str, rc: int = 0) -> str:
        r = cli(*args, env=env, cwd=tmp_path)
        assert r.returncode == rc, (args, r.stdout, r.stderr)
        return r.stdout + r.stderr

    for name in ("ada", "bo", "cy"):
        run("keys", "new", name)
    run("kms", "init", "--admin", "ada", "--admin", "bo", "--admin", "cy", "--quorum", "2")
    kms = Path(env["SEALROOM_HOME"]) / "kms"
    assert (kms / "kms.json").stat().st_mode & 0o077 == 0
    run("kms", "key", "create", "ds1", "--account", "acme")
    assert "primary is now v2" in run("kms", "key", "rotate", "ds1")
    assert "is the primary" in run("kms", "key", "revoke", "ds1", "2", rc=1)
    run("kms", "key", "revoke", "ds1", "1")
    listed = json.loads(run("kms", "key", "list", "--json"))
    assert [v["state"] for v in listed[0]["versions"]] == ["revoked", "active"]
    assert "add --yes" in run("kms", "key", "destroy", "ds1", rc=1)

    out = run(
        "kms",
        "lockdown",
        "--scope",
        "tee=snp",
        "--scope",
        "tcb=snp:0-21",
        "--as",
        "ada",
        "--no-stop",
        "--json",
    )
    lid = json.loads(out)["id"]
    assert "not stopped" in json.loads(out)["not_reached"][0]
    # a non-admin cannot order one
    run("keys", "new", "mallory")
    assert "kms-order-signature" in run(
        "kms", "lockdown", "--scope", "tee=tdx", "--as", "mallory", "--no-stop", rc=2
    )
    run("kms", "lift-sign", lid, "--as", "ada", "--out", "ada.sig")
    run("kms", "lift-sign", lid, "--as", "mallory", "--out", "m.sig")
    assert "kms-lift-quorum" in run(
        "kms",
        "lift",
        lid,
        "--signature",
        "ada.sig",
        "--signature",
        "ada.sig",
        "--signature",
        "m.sig",
        rc=1,
    )
    run("kms", "lift-sign", lid, "--as", "cy", "--out", "cy.sig")
    assert "lifted by ada, cy" in run(
        "kms", "lift", lid, "--signature", "ada.sig", "--signature", "cy.sig"
    )
    assert f"{lid}  lifted" in run("kms", "lockdowns")

    run("kms", "key", "destroy", "ds1", "--yes")
    assert "entries written" in run("kms", "audit", "export", "audit.jsonl")
    assert "audit log OK" in run("kms", "audit", "verify", "audit.jsonl")
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    (tmp_path / "cut.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    (tmp_path / "cut.jsonl.head").write_bytes((tmp_path / "audit.jsonl.head").read_bytes())
    assert "kms-audit-chain-broken" in run("kms", "audit", "verify", "cut.jsonl", rc=2)


def test_data_encrypt_names_key_and_hash_and_decrypts(tmp_path: Path, env: dict[str, str]) -> None:
    def run(*args: str, rc: int = 0) -> str:
        r = cli(*args, env=env, cwd=tmp_path)
        assert r.returncode == rc, (args, r.stdout, r.stderr)
        return r.stdout + r.stderr

    run("kms", "init")
    run("kms", "key", "create", "ds1", "--account", "clinic")
    data = b"patient,age\n" * 10000
    (tmp_path / "d.csv").write_bytes(data)
    out = run("data", "encrypt", "d.csv", "--key-id", "ds1", "--out", "d.csv.enc")
    assert __import__("hashlib").sha256(data).hexdigest() in out
    assert b"patient" not in (tmp_path / "d.csv.enc").read_bytes()
    run("kms", "key", "rotate", "ds1")  # the header names v1: still decrypts
    assert "key ds1 v1" in run("data", "decrypt", "d.csv.enc", "--out", "back.csv")
    assert (tmp_path / "back.csv").read_bytes() == data
    run("kms", "key", "revoke", "ds1", "1")
    assert "kms-version-not-active" in run("data", "decrypt", "d.csv.enc", "--out", "x", rc=1)
