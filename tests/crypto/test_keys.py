"""Party identities: key files (0600, atomic, refused when readable by others), public
parts in the manifest's form, signatures, name rules."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sealroom.crypto.keys import PartyKeys, PartyPublic, key_path, keystore_dir
from sealroom.errors import AttestationError, ConflictError, InvalidInputError

# A low-order X25519 point (RFC 7748 section 6.1: all-zero output).
LOW_ORDER_X25519 = bytes(32)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_save_load_round_trip(tmp_path: Path) -> None:
    keys = PartyKeys.generate("alice")
    path = tmp_path / "keys" / "alice.json"
    keys.save(path)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    loaded = PartyKeys.load(path)
    assert loaded.public == keys.public
    assert loaded.sign(b"m") == keys.sign(b"m")  # Ed25519 is deterministic
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_save_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        PartyKeys.generate("a").save(tmp_path / "a.json")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o600


def test_existing_key_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    first = PartyKeys.generate("k")
    first.save(path)
    with pytest.raises(ConflictError, match="already exists"):
        PartyKeys.generate("k").save(path)
    assert PartyKeys.load(path).public == first.public
    second = PartyKeys.generate("k")
    second.save(path, overwrite=True)
    assert PartyKeys.load(path).public == second.public
    assert _mode(path) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.json"
    PartyKeys.generate("k").save(path)
    path.chmod(mode)
    with pytest.raises(InvalidInputError, match="chmod 600") as ei:
        PartyKeys.load(path)
    assert ei.value.code == "key-file-permissions"
    assert f"{mode:04o}" in ei.value.message


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    PartyKeys.generate("k").save(real)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(InvalidInputError):
        PartyKeys.load(link)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as ei:
        PartyKeys.load(tmp_path / "nope.json")
    assert ei.value.code == "key-not-found"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def test_damaged_key_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    PartyKeys.generate("k").save(path)
    obj = json.loads(path.read_text())
    obj["x25519"] = PartyKeys.generate("other").public.x25519.hex()
    damaged = tmp_path / "damaged.json"
    _write_private(damaged, json.dumps(obj))
    with pytest.raises(InvalidInputError, match=r"x25519 is .* damaged"):
        PartyKeys.load(damaged)


@pytest.mark.parametrize(
    "text", ["not json", "[]", '{"sealroom_party_key": 2}', '{"sealroom_party_key": 1}']
)
def test_not_a_key_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "k.json"
    _write_private(path, text)
    with pytest.raises(InvalidInputError):
        PartyKeys.load(path)


def test_private_key_not_echoed_on_error(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    PartyKeys.generate("k").save(path)
    obj = json.loads(path.read_text())
    secret = obj["ed25519_private"]
    obj["ed25519_private"] = secret[:-1] + "z"
    bad = tmp_path / "bad.json"
    _write_private(bad, json.dumps(obj))
    with pytest.raises(InvalidInputError) as ei:
        PartyKeys.load(bad)
    assert secret[:20] not in ei.value.message
    assert secret[:20] not in repr(PartyKeys.load(path))


def test_public_json_round_trip_and_verify() -> None:
    keys = PartyKeys.generate("bob")
    obj = keys.public.to_json_obj()
    assert set(obj) == {"name", "ed25519", "x25519"}
    pub = PartyPublic.from_json_obj(obj)
    assert pub == keys.public
    pub.verify(keys.sign(b"hello"), b"hello")
    with pytest.raises(AttestationError) as ei:
        pub.verify(keys.sign(b"hello"), b"hellO")
    assert ei.value.code == "signature-invalid"
    with pytest.raises(AttestationError):
        pub.verify(b"\0" * 63, b"hello")
    assert pub.x25519_key().public_bytes_raw() == pub.x25519
    assert pub.ed25519_key().public_bytes_raw() == pub.ed25519


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ("alice", "party"),
        ({"name": "a", "ed25519": "00" * 32}, "x25519"),
        ({"name": "a", "ed25519": "zz" * 32, "x25519": "00" * 32}, "ed25519"),
        ({"name": "a", "ed25519": "00" * 31, "x25519": "00" * 32}, "ed25519"),
        ({"name": "a b", "ed25519": "00" * 32, "x25519": "00" * 32}, "name"),
        ({"name": "a", "ed25519": "00" * 32, "x25519": "00" * 32, "rsa": "x"}, "rsa"),
    ],
)
def test_bad_public_identity_names_the_field(obj: object, field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        PartyPublic.from_json_obj(obj)


def test_low_order_x25519_key_is_refused() -> None:
    good = PartyKeys.generate("a").public
    with pytest.raises(InvalidInputError, match="low-order"):
        PartyPublic("a", good.ed25519, LOW_ORDER_X25519)


@pytest.mark.parametrize("name", ["", ".", "..", "-rf", ".hidden", "a/b", "a b", "x" * 65, "é"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError, match="valid party name"):
        PartyKeys.generate(name)
    with pytest.raises(InvalidInputError):
        key_path(name)


def test_keystore_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEALROOM_HOME", str(tmp_path))
    assert keystore_dir() == tmp_path / "keys"
    assert key_path("alice") == tmp_path / "keys" / "alice.json"
    monkeypatch.delenv("SEALROOM_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert keystore_dir() == tmp_path / "home" / ".local" / "share" / "sealroom" / "keys"
