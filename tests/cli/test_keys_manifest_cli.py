"""`sealroom keys` and `sealroom manifest`, driven through the real CLI in a subprocess
with its own SEALROOM_HOME."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import rfc8785

from sealroom.crypto.keys import PartyKeys
from sealroom.manifest import Manifest
from sealroom.runtime.archive import archive_dir


def sealroom(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEALROOM_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sealroom.cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_keys_new_writes_a_private_key_and_prints_only_public_parts(home: Path) -> None:
    r = sealroom(home, "keys", "new", "alice")
    assert r.returncode == 0, r.stderr
    path = home / "keys" / "alice.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())
    keys = PartyKeys.load(path)
    assert keys.public.ed25519.hex() in r.stdout and keys.public.x25519.hex() in r.stdout
    assert str(path) in r.stdout
    for secret in (stored["ed25519_private"], stored["x25519_private"]):
        assert secret not in r.stdout + r.stderr


def test_keys_new_refuses_to_overwrite_without_force(home: Path) -> None:
    assert sealroom(home, "keys", "new", "bob").returncode == 0
    before = PartyKeys.load(home / "keys" / "bob.json").public
    r = sealroom(home, "keys", "new", "bob")
    assert r.returncode == 1 and "already exists" in r.stderr and "key-exists" in r.stderr
    assert PartyKeys.load(home / "keys" / "bob.json").public == before
    r = sealroom(home, "keys", "new", "bob", "--force", "--json")
    assert r.returncode == 0, r.stderr
    after = PartyKeys.load(home / "keys" / "bob.json").public
    assert after != before
    assert json.loads(r.stdout)["public"] == after.to_json_obj()


def test_keys_show_json_is_the_manifest_form(home: Path) -> None:
    assert sealroom(home, "keys", "new", "carol").returncode == 0
    r = sealroom(home, "keys", "show", "carol", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == PartyKeys.load(home / "keys" / "carol.json").public.to_json_obj()
    r = sealroom(home, "keys", "list", "--json")
    assert json.loads(r.stdout)["keys"] == ["carol"]


def test_keys_show_refuses_a_world_readable_key(home: Path) -> None:
    assert sealroom(home, "keys", "new", "dave").returncode == 0
    (home / "keys" / "dave.json").chmod(0o644)
    r = sealroom(home, "keys", "show", "dave")
    assert r.returncode == 1
    assert "key-file-permissions" in r.stderr and "chmod 600" in r.stderr


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (("keys", "show", "nobody"), "key-not-found"),
        (("keys", "new", "../escape"), "invalid-name"),
        (("manifest", "validate", "missing.json"), "cannot read manifest"),
    ],
)
def test_bad_input_exits_1(home: Path, args: tuple[str, ...], want: str) -> None:
    r = sealroom(home, *args)
    assert r.returncode == 1
    assert want in r.stderr


def test_manifest_init_from_keys_and_files_validates_and_hashes(home: Path, tmp_path: Path) -> None:
    for n in ("algo", "dp1", "dp2", "alice"):
        assert sealroom(home, "keys", "new", n).returncode == 0
    pub = sealroom(home, "keys", "show", "dp2", "--json")
    (tmp_path / "dp2.pub.json").write_text(pub.stdout)
    (tmp_path / "avg.py").write_text("print('mean')\n")
    (tmp_path / "a.csv").write_text("1\n2\n")
    (tmp_path / "b.csv").write_text("3\n")
    out = tmp_path / "m.json"
    r = sealroom(
        home,
        "manifest",
        "init",
        "--out",
        str(out),
        "--id",
        "avg-1",
        "--algorithm-key",
        "algo",
        "--algorithm",
        str(tmp_path / "avg.py"),
        "--dataset",
        f"a:dp1:{tmp_path / 'a.csv'}",
        "--dataset",
        f"b:{tmp_path / 'dp2.pub.json'}:{tmp_path / 'b.csv'}",
        "--consumer",
        "alice",
    )
    assert r.returncode == 0, r.stderr
    assert "SIMULATED" in r.stderr  # the sim template says what it is
    m = Manifest.load(out)
    assert m.id == "avg-1"
    assert m.algorithm.kind == "python" and m.algorithm.entrypoint == "avg.py"
    assert m.algorithm.sha256 == hashlib.sha256(b"print('mean')\n").digest()
    assert m.slot("a").sha256 == hashlib.sha256(b"1\n2\n").digest()
    assert m.slot("b").provider == PartyKeys.load(home / "keys" / "dp2.json").public
    assert m.consumer("alice") == PartyKeys.load(home / "keys" / "alice.json").public

    r = sealroom(home, "manifest", "validate", str(out), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["valid"] is True and summary["manifest_hash"] == m.manifest_hash.hex()
    assert [s["name"] for s in summary["slots"]] == ["algorithm", "a", "b"]
    assert summary["policy"]["allow_simulated"] is True

    r = sealroom(home, "manifest", "hash", str(out))
    want = hashlib.sha256(rfc8785.dumps(json.loads(out.read_text()))).hexdigest()
    assert r.returncode == 0 and r.stdout.strip() == want == m.manifest_hash.hex()

    # Reformatted (other key order, other whitespace): the same hash.
    other = tmp_path / "m-reformatted.json"
    other.write_text(json.dumps(json.loads(out.read_text()), sort_keys=True, indent=7))
    assert sealroom(home, "manifest", "hash", str(other)).stdout.strip() == want


def test_manifest_init_placeholders_are_reported_by_field(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    r = sealroom(home, "manifest", "init", "--out", str(out), "--tee", "snp")
    assert r.returncode == 0, r.stderr
    assert "manifest.algorithm.sha256" in r.stderr and "placeholder" in r.stderr
    r = sealroom(home, "manifest", "validate", str(out))
    assert r.returncode == 1
    assert "invalid-manifest" in r.stderr
    assert "manifest.consumers[0].ed25519: is still a placeholder" in r.stderr
    r = sealroom(home, "manifest", "init", "--out", str(out))
    assert r.returncode == 1 and "--force" in r.stderr


def test_manifest_init_refuses_a_private_key_file_as_public_key(home: Path, tmp_path: Path) -> None:
    assert sealroom(home, "keys", "new", "eve").returncode == 0
    r = sealroom(home, "manifest", "init", "--consumer", str(home / "keys" / "eve.json"))
    assert r.returncode == 1 and "private-key-not-accepted" in r.stderr
    assert "_private" not in r.stdout


def test_manifest_init_real_tee_has_no_demo_defaults_and_checks_limits(home: Path) -> None:
    """Issue 15: a manifest for a real TEE never carries the sim template's `demo-001` /
    "Example computation" (they are placeholders `validate` reports), and a limit flag out
    of range is refused by name."""
    r = sealroom(home, "manifest", "init", "--tee", "snp")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["id"].startswith("REPLACE") and doc["name"].startswith("REPLACE")
    assert "manifest.id" in r.stderr and "manifest.name" in r.stderr
    assert "demo-001" not in r.stdout and "Example computation" not in r.stdout
    r = sealroom(home, "manifest", "init", "--tee", "snp", "--id", "ward-7", "--name", "Ward 7")
    assert json.loads(r.stdout)["id"] == "ward-7"
    r = sealroom(home, "manifest", "init", "--memory-mb", "0")
    assert r.returncode == 1 and "--memory-mb 0" in r.stderr, r.stderr


def test_checksum_of_a_directory_is_its_deterministic_tar(home: Path, tmp_path: Path) -> None:
    """`sealroom checksum DIR` is the SHA-256 of exactly the tar `upload` sends, whatever
    the files' times; a symbolic link in it is refused (the archive never follows one)."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "x.csv").write_text("1,2\n")
    buf = io.BytesIO()
    archive_dir(d, buf)
    r = sealroom(home, "checksum", str(d), "--json")
    assert r.returncode == 0, r.stderr
    [e] = json.loads(r.stdout)
    assert e["sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()
    assert (e["max_size"], e["archive"]) == (len(buf.getvalue()), "tar")
    os.utime(d / "x.csv", (1, 1))
    assert json.loads(sealroom(home, "checksum", str(d), "--json").stdout) == [e]
    (d / "link").symlink_to(d / "x.csv")
    r = sealroom(home, "checksum", str(d))
    assert r.returncode == 1 and "link" in r.stderr, r.stderr
