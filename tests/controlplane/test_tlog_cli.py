"""`sealroom computation receipt`, `sealroom log verify|witness|checkpoint` as a user runs
them, against a control plane served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sealroom.cli.main import run
from sealroom.tlog.entries import Kind
from tests.controlplane.conftest import Env, manifest_doc


def sh(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = run(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_receipt_download_verify_and_witness(
    live: tuple[Env, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env, url = live
    monkeypatch.setenv("SEALROOM_URL", url)
    monkeypatch.setenv("SEALROOM_API_KEY", env.admin_key)
    vkey = env.cp.tlog.vkey()
    (tmp_path / "log.vkey").write_text(vkey + "\n")
    rc, _, err = sh(capsys, "log", "checkpoint", "--log", url, "-o", str(tmp_path / "old.cp"))
    assert rc == 0, err

    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.complete(cred, cid)
    receipt = tmp_path / "receipt.json"
    rc, out, err = sh(capsys, "computation", "receipt", cid, "-o", str(receipt))
    assert rc == 0, err
    assert json.loads(receipt.read_bytes())["payload"]["exit"]["ok"] is True
    assert (tmp_path / "receipt.json.tlog-proof").read_text().startswith("c2sp.org/tlog-proof@v1")

    rc, out, err = sh(capsys, "log", "verify", str(receipt), "--log-key", vkey, "--json")
    assert rc == 0, err
    assert json.loads(out)["included"] is True and json.loads(out)["tree_size"] == 1

    # the log grows; inclusion in a newer checkpoint is proven with a fetched proof
    env.cp.tlog.append_many([(Kind.HEARTBEAT, {"n": i}) for i in range(20)])
    rc, _, err = sh(
        capsys,
        "log",
        "checkpoint",
        "--log",
        url,
        "-o",
        str(tmp_path / "new.cp"),
        "--log-key",
        str(tmp_path / "log.vkey"),
    )
    assert rc == 0, err
    rc, out, err = sh(
        capsys,
        "log",
        "verify",
        str(receipt),
        "--log-key",
        vkey,
        "--checkpoint",
        str(tmp_path / "new.cp"),
        "--log",
        url,
        "--json",
    )
    assert rc == 0, err
    assert json.loads(out)["tree_size"] == 21
    rc, out, err = sh(
        capsys,
        "log",
        "witness",
        str(tmp_path / "old.cp"),
        str(tmp_path / "new.cp"),
        "--log-key",
        vkey,
        "--log",
        url,
        "--json",
    )
    assert rc == 0, err
    assert json.loads(out) == {
        "origin": "sealroom.local/log",
        "old_size": 0,
        "new_size": 21,
        "consistent": True,
    }
    mid = tmp_path / "mid.cp"
    mid.write_text(env.cp.tlog.checkpoint())
    rc, _, err = sh(capsys, "log", "witness", str(tmp_path / "new.cp"), str(mid), "--log-key", vkey)
    assert rc == 0, err


def test_verify_refuses_forgeries(
    live: tuple[Env, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env, url = live
    monkeypatch.setenv("SEALROOM_URL", url)
    monkeypatch.setenv("SEALROOM_API_KEY", env.admin_key)
    vkey = env.cp.tlog.vkey()
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.complete(cred, cid)
    receipt = tmp_path / "receipt.json"
    assert sh(capsys, "computation", "receipt", cid, "-o", str(receipt))[0] == 0
    proof = Path(f"{receipt}.tlog-proof")

    # an edited receipt is not the logged one
    doc = json.loads(receipt.read_bytes())
    doc["payload"]["exit"]["reason"] = "edited"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    rc, _, err = sh(capsys, "log", "verify", str(edited), "--proof", str(proof), "--log-key", vkey)
    assert rc == 2 and "tlog-proof-invalid" in err
    # whitespace and key order do not matter (the leaf is over the canonical form)
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(receipt.read_bytes()), indent=4))
    assert (
        sh(capsys, "log", "verify", str(pretty), "--proof", str(proof), "--log-key", vkey)[0] == 0
    )
    # a key the verifier did not name: the checkpoint is not trusted
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sealroom.tlog import note

    other = note.Signer("sealroom.local/log", Ed25519PrivateKey.generate())
    rc, _, err = sh(capsys, "log", "verify", str(receipt), "--log-key", other.verifier.vkey())
    assert rc == 2 and "tlog-signature-missing" in err
    # the log signs a checkpoint for the same size with another root: a fork
    forged_cp = tmp_path / "forged.cp"
    from sealroom.tlog.checkpoint import Checkpoint

    forged_cp.write_text(Checkpoint("sealroom.local/log", 1, bytes(32)).sign(env.cp.tlog.signer))
    rc, _, err = sh(
        capsys, "log", "verify", str(receipt), "--log-key", vkey, "--checkpoint", str(forged_cp)
    )
    assert rc == 2 and "forked" in err
    # witness: a rewritten log (new root not extending the old) is caught
    old = tmp_path / "old.cp"
    old.write_text(env.cp.tlog.checkpoint())
    env.cp.tlog.append(Kind.HEARTBEAT, {"n": 1})
    rewritten = tmp_path / "rewritten.cp"
    rewritten.write_text(Checkpoint("sealroom.local/log", 2, bytes(32)).sign(env.cp.tlog.signer))
    rc, _, err = sh(
        capsys, "log", "witness", str(old), str(rewritten), "--log-key", vkey, "--log", url
    )
    assert rc == 2 and "tlog-proof-invalid" in err
    # a proof file with a flipped hash
    new = tmp_path / "new.cp"
    new.write_text(env.cp.tlog.checkpoint())
    pf = tmp_path / "proof.txt"
    pf.write_text(base64.b64encode(bytes(32)).decode() + "\n")
    rc, _, err = sh(
        capsys, "log", "witness", str(old), str(new), "--log-key", vkey, "--proof", str(pf)
    )
    assert rc == 2
    # no proof source at all
    rc, _, err = sh(capsys, "log", "witness", str(old), str(new), "--log-key", vkey)
    assert rc == 1 and "tlog-proof-missing" in err
    # a malformed vkey
    rc, _, err = sh(capsys, "log", "verify", str(receipt), "--log-key", "nonsense+zz+AA")
    assert rc == 1


GOVERIFY = Path(__file__).resolve().parents[1] / "tlog" / "goverify" / "main.go"


def test_go_reference_implementation_accepts_the_log(live: tuple[Env, str], tmp_path: Path) -> None:
    """Go's golang.org/x/mod/sumdb/note and sumdb/tlog (Debian golang-golang-x-mod-dev;
    the implementations C2SP signed-note and tlog-tiles come from) verify our checkpoint
    signature and vkey, authenticate our tiles against the root, and accept our inclusion
    and consistency proofs, for a log of 300 entries (a full tile and a partial one)."""
    go = shutil.which("go")
    if go is None or not Path("/usr/share/gocode/src/golang.org/x/mod/sumdb").is_dir():
        pytest.skip("needs Debian golang-go and golang-golang-x-mod-dev (scripts/bootstrap.sh)")
    env, url = live
    env.cp.tlog.append_many([(Kind.HEARTBEAT, {"n": i}) for i in range(300)])
    goenv = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": "/usr/share/gocode",
        "GOCACHE": str(tmp_path / "gocache"),
        "GOFLAGS": "",
    }
    exe = tmp_path / "goverify"
    subprocess.run([go, "build", "-o", str(exe), str(GOVERIFY)], env=goenv, check=True, timeout=600)
    r = subprocess.run(
        [str(exe), url, env.cp.tlog.vkey()], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok 300", r.stderr
    # and it does fail: another key's checkpoint, or a log whose entry was rewritten
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sealroom.tlog import note

    other = note.Signer("sealroom.local/log", Ed25519PrivateKey.generate()).verifier.vkey()
    r = subprocess.run([str(exe), url, other], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "checkpoint" in r.stderr
    from sqlalchemy import update

    from sealroom.controlplane.store.models import TlogEntry

    with env.cp.store.session() as s:
        s.execute(update(TlogEntry).where(TlogEntry.idx == 7).values(data=b'{"rewritten":1}'))
    r = subprocess.run(
        [str(exe), url, env.cp.tlog.vkey()], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 1 and "record 7" in r.stderr


def test_publish_measurement_cli(
    live: tuple[Env, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env, url = live
    monkeypatch.setenv("SEALROOM_URL", url)
    monkeypatch.setenv("SEALROOM_API_KEY", env.admin_key)
    m = "AB" * 48
    rc, out, err = sh(
        capsys,
        "log",
        "publish-measurement",
        "--name",
        "sealroom-runtime",
        "--tee",
        "snp",
        "--measurement",
        m,
        "--version",
        "1.2",
    )
    assert rc == 0 and "logged at index 0" in out, err
    assert json.loads(env.cp.tlog.entry(0))["payload"]["measurement"] == m.lower()
    rc, _, err = sh(
        capsys, "log", "publish-measurement", "--name", "x", "--tee", "sgx", "--measurement", m
    )
    assert rc == 1 and "tee" in err
    _, key = env.user("notadmin")
    monkeypatch.setenv("SEALROOM_API_KEY", key)
    rc, _, err = sh(
        capsys, "log", "publish-measurement", "--name", "x", "--tee", "snp", "--measurement", m
    )
    assert rc != 0 and "admin" in err
    assert env.cp.tlog.size() == 1


def test_other_components_append_over_http(live: tuple[Env, str]) -> None:
    """A key broker (another process) logs a key release with the operator's key; a
    receipt cannot be pushed this way, nor by a non-admin or without a key."""
    from sealroom.client.tlog import LogClient
    from sealroom.errors import AccessDeniedError, InvalidInputError, SealroomError

    env, url = live
    payload = {"resource": "default/key/model", "session": "s1", "claims_sha256": "ab" * 32}
    with LogClient(url, env.admin_key) as c:
        a = c.append("key-release", payload)
        assert a.index == 0
        with pytest.raises(InvalidInputError):
            c.append("receipt", {"manifest_hash": "00", "receipt_sha256": "00"})
        with pytest.raises(InvalidInputError):
            c.append("key-release", {"blob": "x" * 70000})
    assert json.loads(env.cp.tlog.entry(0)) == {"kind": "key-release", "payload": payload}
    _, key = env.user("svc")
    with LogClient(url, key) as c, pytest.raises(AccessDeniedError):
        c.append("lockdown", {"scope": "all"})
    with LogClient(url) as c, pytest.raises(SealroomError):
        c.append("lockdown", {"scope": "all"})
    assert env.cp.tlog.size() == 1


def test_witness_catches_a_log_that_rewrote_history(
    live: tuple[Env, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator rewrites entry 3 and rebuilds every stored hash consistently (the
    new tree is internally valid and signed by the log's own key); a witness holding the
    old checkpoint refuses the new one."""
    from sqlalchemy import delete

    from sealroom.controlplane.store.models import TlogEntry, TlogNode

    env, url = live
    items = [(Kind.HEARTBEAT, {"n": i}) for i in range(20)]
    env.cp.tlog.append_many(items)
    old = tmp_path / "old.cp"
    old.write_text(env.cp.tlog.checkpoint())
    with env.cp.store.session() as s:
        s.execute(delete(TlogNode))
        s.execute(delete(TlogEntry))
    env.cp.tlog._cache.clear()
    items[3] = (Kind.HEARTBEAT, {"n": 3, "rewritten": True})
    env.cp.tlog.append_many([*items, (Kind.HEARTBEAT, {"n": 20})])
    new = tmp_path / "new.cp"
    new.write_text(env.cp.tlog.checkpoint())
    vkey = env.cp.tlog.vkey()
    rc, _, err = sh(capsys, "log", "witness", str(old), str(new), "--log-key", vkey, "--log", url)
    assert rc == 2 and "tlog-proof-invalid" in err
