"""KEK backends: the file backend (0600) and PKCS#11 against a real SoftHSM2 token."""

from __future__ import annotations

import stat
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, Mechanism, ObjectClass

from sealroom.errors import AttestationError, InvalidInputError, NotFoundError
from sealroom.kms import LockdownGuard, Lockdowns, Scope, release
from sealroom.kms.kek import FileKekBackend, Pkcs11Config, Pkcs11KekBackend
from sealroom.kms.lockdown import LockdownRefused, lockdown_order
from sealroom.kms.store import KeyManager
from tests.kms.claims import snp_claims


def test_file_kek_is_0600_and_wraps_rfc5649(tmp_path: Path) -> None:
    b = FileKekBackend(tmp_path / "kek")
    b.create("k1")
    path = tmp_path / "kek" / "k1.kek"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "kek").stat().st_mode) == 0o700
    wrapped = b.wrap("k1", b"m" * 32)
    assert b"m" * 32 not in wrapped
    # An independent reader holding the KEK unwraps it (the format is RFC 5649, nothing else).
    assert aes_key_unwrap_with_padding(path.read_bytes(), wrapped) == b"m" * 32
    assert b.unwrap("k1", wrapped) == b"m" * 32


def test_file_kek_tampered_wrap_refused(tmp_path: Path) -> None:
    b = FileKekBackend(tmp_path)
    b.create("k1")
    wrapped = bytearray(b.wrap("k1", b"m" * 32))
    wrapped[5] ^= 1
    with pytest.raises(AttestationError) as e:
        b.unwrap("k1", bytes(wrapped))
    assert e.value.code == "kms-unwrap-failed"


def test_file_kek_readable_by_others_refused(tmp_path: Path) -> None:
    b = FileKekBackend(tmp_path)
    b.create("k1")
    wrapped = b.wrap("k1", b"m" * 32)
    (tmp_path / "k1.kek").chmod(0o644)
    with pytest.raises(InvalidInputError) as e:
        b.unwrap("k1", wrapped)
    assert e.value.code == "kms-kek-permissions"


def test_file_kek_destroy_makes_unwrap_impossible(tmp_path: Path) -> None:
    b = FileKekBackend(tmp_path)
    b.create("k1")
    wrapped = b.wrap("k1", b"m" * 32)
    b.destroy("k1")
    assert not b.exists("k1")
    with pytest.raises(NotFoundError):
        b.unwrap("k1", wrapped)


def _session(cfg: Pkcs11Config) -> pkcs11.Session:
    return (
        pkcs11.lib(cfg.module)
        .get_token(token_label=cfg.token_label)
        .open(user_pin=cfg.pin(), rw=True)
    )


def test_pkcs11_kek_is_non_extractable_and_wraps_in_token(softhsm_token: Pkcs11Config) -> None:
    b = Pkcs11KekBackend(softhsm_token)
    b.create("kek-a")
    assert b.exists("kek-a")
    wrapped = b.wrap("kek-a", b"s" * 32)
    assert len(wrapped) == 40 and b"s" * 32 not in wrapped
    assert b.unwrap("kek-a", wrapped) == b"s" * 32
    with _session(softhsm_token) as s:
        kek = s.get_key(object_class=ObjectClass.SECRET_KEY, label="kek-a")
        assert kek[Attribute.EXTRACTABLE] is False
        assert kek[Attribute.SENSITIVE] is True
        assert kek[Attribute.TOKEN] is True
        # Reading the value is refused by the token ...
        with pytest.raises(pkcs11.AttributeSensitive):
            kek[Attribute.VALUE]
        # ... and so is wrapping it out under another key.
        other = s.generate_key(
            pkcs11.KeyType.AES,
            256,
            store=False,
            template={Attribute.WRAP: True, Attribute.EXTRACTABLE: True},
        )
        with pytest.raises(pkcs11.KeyUnextractable):
            other.wrap_key(kek, mechanism=Mechanism.AES_KEY_WRAP_PAD)  # type: ignore[attr-defined]
        # No session object (the data key's temporary) is left behind.
        assert [o for o in s.get_objects({Attribute.TOKEN: False})] == [other]


def test_pkcs11_tampered_wrap_refused(softhsm_token: Pkcs11Config) -> None:
    b = Pkcs11KekBackend(softhsm_token)
    b.create("kek-b")
    wrapped = bytearray(b.wrap("kek-b", b"s" * 32))
    wrapped[-1] ^= 1
    with pytest.raises(AttestationError):
        b.unwrap("kek-b", bytes(wrapped))


def test_pkcs11_destroy_removes_kek_from_token(softhsm_token: Pkcs11Config) -> None:
    b = Pkcs11KekBackend(softhsm_token)
    b.create("kek-c")
    wrapped = b.wrap("kek-c", b"s" * 32)
    b.destroy("kek-c")
    assert not b.exists("kek-c")
    with _session(softhsm_token) as s:
        assert list(s.get_objects({Attribute.LABEL: "kek-c"})) == []
    with pytest.raises(NotFoundError):
        b.unwrap("kek-c", wrapped)


def test_pkcs11_missing_pin_is_a_clear_error(
    softhsm_token: Pkcs11Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEALROOM_KMS_PKCS11_PIN")
    with pytest.raises(InvalidInputError) as e:
        Pkcs11KekBackend(softhsm_token).create("kek-d")
    assert e.value.code == "kms-pkcs11-pin-missing"


def test_key_manager_on_softhsm_rotates_kek_and_destroys_old(
    softhsm_token: Pkcs11Config, tmp_path: Path
) -> None:
    km = KeyManager.init(tmp_path / "kms", pkcs11=softhsm_token)
    km.create("data", account="acme", actor="t")
    _, before = km.material("data")
    old, new = km.rotate_kek(actor="t")
    assert km.material("data") == (1, before)
    b = Pkcs11KekBackend(softhsm_token)
    assert not b.exists(old) and b.exists(new)
    # Nothing of the KEK on disk: the config names the token, not a key.
    assert not (tmp_path / "kms" / "kek").exists()


def test_lockdown_on_softhsm_revokes_rotates_the_token_kek_and_destroys_the_old(
    softhsm_token: Pkcs11Config, tmp_path: Path
) -> None:
    """Each lockdown step with the KEK in a real PKCS#11 token (issue 10's done-means)."""
    admin = Ed25519PrivateKey.generate()
    pub = admin.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    km = KeyManager.init(tmp_path / "kms", pkcs11=softhsm_token, admins={"root": pub})
    km.create("ds", account="acme", actor="t")
    claims = snp_claims(chip_id="0f" * 64)
    _, released = release(km, "ds", None, claims, actor="kbs", policy="p")
    kek_before = km.kek_label
    b = Pkcs11KekBackend(softhsm_token)
    assert b.exists(kek_before)

    result = Lockdowns(km).apply(lockdown_order(Scope(chip_id="0f" * 64), admin))

    with pytest.raises(LockdownRefused):  # (1) in force
        LockdownGuard(km).check(claims, "acme")
    assert result.revoked == ["ds/v1"]  # (2) what was released in scope
    assert km.info("ds").versions[0].state == "revoked"
    assert result.kek == (kek_before, km.kek_label)  # (3) rotated in the token ...
    assert not b.exists(kek_before) and b.exists(km.kek_label)  # ... the old one gone
    number, now = km.material("ds")
    assert number == 2 and now != released and len(now) == 32
