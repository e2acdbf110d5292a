"""Party identities: an Ed25519 key (signing uploads) and an X25519 key (receiving sealed
results), kept in a private key store.

Key file (``$SEALROOM_HOME/keys/NAME.json``, mode 0600, folder 0700)::

    {"sealroom_party_key": 1, "name": "alice",
     "ed25519_private": "<32-byte seed, hex>", "x25519_private": "<32 bytes, hex>",
     "ed25519": "<public, hex>", "x25519": "<public, hex>"}

The public halves are stored too so a damaged file is noticed on load (they must match
the private keys). Files are written atomically (a new 0600 temp file opened with
O_EXCL in the same folder, then link/rename), and a key file that group or others may
read is refused, as ssh refuses an unprotected private key.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from sealroom import paths
from sealroom.errors import AttestationError, ConflictError, InvalidInputError
from sealroom.files import write_private

KEY_FILE_VERSION = 1

# Letters, digits, '_', '.', '-'; 1 to 64 characters, starting with a letter or digit (so
# a name is never '.', '..', a hidden file or something that looks like a CLI option).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw


def validate_name(name: object, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInputError(
            f"{what} {name!r} is not a valid party name: want 1-64 characters from "
            "[A-Za-z0-9_.-], starting with a letter or digit",
            code="invalid-name",
        )
    return name


def _hex32(obj: dict[str, Any], field: str, where: str) -> bytes:
    value = obj.get(field)
    if not isinstance(value, str):
        raise InvalidInputError(
            f"{where}.{field}: missing or not a string (want 64 hex characters)",
            code="invalid-key",
        )
    try:
        raw = bytes.fromhex(value)
    except ValueError as e:
        shown = "(value not shown)" if field.endswith("_private") else repr(value[:80])
        raise InvalidInputError(f"{where}.{field}: {shown} is not hex", code="invalid-key") from e
    if len(raw) != 32:
        raise InvalidInputError(
            f"{where}.{field}: {len(raw)} bytes, want 32 (64 hex characters)", code="invalid-key"
        )
    return raw


@dataclass(frozen=True)
class PartyPublic:
    """The public identity of a party, as the manifest names it."""

    name: str
    ed25519: bytes
    x25519: bytes

    def __post_init__(self) -> None:
        validate_name(self.name)
        if not isinstance(self.ed25519, bytes) or len(self.ed25519) != 32:
            raise InvalidInputError(f"party {self.name!r}: ed25519 key must be 32 bytes")
        if not isinstance(self.x25519, bytes) or len(self.x25519) != 32:
            raise InvalidInputError(f"party {self.name!r}: x25519 key must be 32 bytes")
        try:
            Ed25519PublicKey.from_public_bytes(self.ed25519)
        except ValueError as e:
            raise InvalidInputError(
                f"party {self.name!r}: ed25519 {self.ed25519.hex()} is not an Ed25519 public key",
                code="invalid-key",
            ) from e
        # A low-order X25519 point gives an all-zero shared secret: nothing could ever be
        # sealed to it. Refuse it here, where the manifest is checked, not at sealing time.
        try:
            X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(self.x25519))
        except ValueError as e:
            raise InvalidInputError(
                f"party {self.name!r}: x25519 {self.x25519.hex()} is a low-order point, "
                "not a usable X25519 public key",
                code="invalid-key",
            ) from e

    def __repr__(self) -> str:
        return (
            f"PartyPublic(name={self.name!r}, ed25519={self.ed25519.hex()}, "
            f"x25519={self.x25519.hex()})"
        )

    def to_json_obj(self) -> dict[str, str]:
        return {"name": self.name, "ed25519": self.ed25519.hex(), "x25519": self.x25519.hex()}

    @classmethod
    def from_json_obj(cls, obj: object, where: str = "party") -> PartyPublic:
        if not isinstance(obj, dict):
            raise InvalidInputError(
                f"{where}: must be an object with name, ed25519, x25519; got {type(obj).__name__}",
                code="invalid-key",
            )
        extra = sorted(str(k) for k in obj if k not in ("name", "ed25519", "x25519"))
        if extra:
            raise InvalidInputError(
                f"{where}: unknown field(s) {', '.join(extra)} (want name, ed25519, x25519)",
                code="invalid-key",
            )
        name = validate_name(obj.get("name"), f"{where}.name")
        return cls(name, _hex32(obj, "ed25519", where), _hex32(obj, "x25519", where))

    def ed25519_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.ed25519)

    def x25519_key(self) -> X25519PublicKey:
        return X25519PublicKey.from_public_bytes(self.x25519)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise AttestationError(code="signature-invalid") unless ``signature`` is this
        party's Ed25519 signature over ``message``."""
        try:
            self.ed25519_key().verify(signature, message)
        except InvalidSignature as e:
            raise AttestationError(
                f"signature is not {self.name!r}'s: it does not verify under ed25519 "
                f"{self.ed25519.hex()}",
                code="signature-invalid",
            ) from e


class PartyKeys:
    """A party's private keys. Never printed; saved only by :meth:`save`."""

    def __init__(self, name: str, ed25519: Ed25519PrivateKey, x25519: X25519PrivateKey) -> None:
        self.name = validate_name(name)
        self.ed25519 = ed25519
        self.x25519 = x25519

    def __repr__(self) -> str:  # keep private keys out of logs and tracebacks
        return f"PartyKeys(name={self.name!r}, ed25519={self.public.ed25519.hex()}, ...)"

    @classmethod
    def generate(cls, name: str) -> PartyKeys:
        return cls(name, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def public(self) -> PartyPublic:
        return PartyPublic(
            self.name,
            self.ed25519.public_key().public_bytes(_RAW, _RAW_PUB),
            self.x25519.public_key().public_bytes(_RAW, _RAW_PUB),
        )

    def sign(self, message: bytes) -> bytes:
        return self.ed25519.sign(message)

    def _to_json(self) -> bytes:
        pub = self.public
        obj = {
            "sealroom_party_key": KEY_FILE_VERSION,
            "name": self.name,
            "ed25519_private": self.ed25519.private_bytes(
                _RAW, _RAW_PRIV, serialization.NoEncryption()
            ).hex(),
            "x25519_private": self.x25519.private_bytes(
                _RAW, _RAW_PRIV, serialization.NoEncryption()
            ).hex(),
            "ed25519": pub.ed25519.hex(),
            "x25519": pub.x25519.hex(),
        }
        return (json.dumps(obj, indent=2) + "\n").encode()

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        """Write the key file, mode 0600, atomically. The parent folder is created 0700
        if missing. Without ``overwrite`` an existing file is left alone (ConflictError)."""
        path = Path(path)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise InvalidInputError(
                f"cannot create key folder {path.parent}: {e.strerror or e}",
                code="key-write-failed",
            ) from e
        try:
            write_private(path, self._to_json(), overwrite=overwrite, what="key file")
        except FileExistsError as e:
            raise ConflictError(
                f"key file {path} already exists; refusing to overwrite a private key "
                "(use --force to replace it)",
                code="key-exists",
            ) from e

    @classmethod
    def load(cls, path: Path) -> PartyKeys:
        path = Path(path)
        data = _read_private_file(path)
        where = f"key file {path}"
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidInputError(f"{where}: not JSON: {e}", code="invalid-key-file") from e
        if not isinstance(obj, dict) or obj.get("sealroom_party_key") != KEY_FILE_VERSION:
            raise InvalidInputError(
                f"{where}: not a sealroom party key (want sealroom_party_key: {KEY_FILE_VERSION})",
                code="invalid-key-file",
            )
        name = validate_name(obj.get("name"), f"{where}: name")
        keys = cls(
            name,
            Ed25519PrivateKey.from_private_bytes(_hex32(obj, "ed25519_private", where)),
            X25519PrivateKey.from_private_bytes(_hex32(obj, "x25519_private", where)),
        )
        pub = keys.public
        for field, got in (("ed25519", pub.ed25519), ("x25519", pub.x25519)):
            stored = _hex32(obj, field, where)
            if stored != got:
                raise InvalidInputError(
                    f"{where}: {field} is {stored.hex()} but the private key's public half "
                    f"is {got.hex()}; the file is damaged",
                    code="invalid-key-file",
                )
        return keys


def sealroom_home() -> Path:
    return paths.home()


def keystore_dir() -> Path:
    """``$SEALROOM_HOME/keys`` (SEALROOM_HOME defaults to ~/.local/share/sealroom)."""
    return paths.keys_dir()


def key_path(name: str) -> Path:
    return keystore_dir() / f"{validate_name(name)}.json"


def ensure_keystore() -> Path:
    """Create the key store folder (0700), or make an existing one 0700 again: it holds
    private keys, so neither group nor others may list or enter it."""
    d = keystore_dir()
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(d.stat().st_mode) & 0o077:
            d.chmod(0o700)
    except OSError as e:
        raise InvalidInputError(
            f"cannot create key store {d}: {e.strerror or e}", code="key-write-failed"
        ) from e
    return d


def list_keys() -> list[str]:
    """Names of the party keys in the key store (not loaded, not checked)."""
    d = keystore_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.iterdir() if p.suffix == ".json" and NAME_RE.fullmatch(p.stem))


def _read_private_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as e:
        raise InvalidInputError(f"no key file at {path}", code="key-not-found") from e
    except OSError as e:
        raise InvalidInputError(
            f"cannot open key file {path}: {e.strerror or e}", code="invalid-key-file"
        ) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInputError(
                f"key file {path} is not a regular file", code="invalid-key-file"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise InvalidInputError(
                f"key file {path} has mode {mode:04o}: group or others may access it, want "
                f"0600. Private keys must be private; run: chmod 600 {path}",
                code="key-file-permissions",
            )
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise InvalidInputError(
                f"key file {path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})",
                code="key-file-permissions",
            )
        if st.st_size > 64 * 1024:
            raise InvalidInputError(
                f"key file {path} is {st.st_size} bytes; a party key is under 1 KiB",
                code="invalid-key-file",
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(64 * 1024)
    finally:
        os.close(fd)
