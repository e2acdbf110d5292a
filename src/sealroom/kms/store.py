"""Versioned keys wrapped under a KEK, in one data directory (no HTTP, no database).

Layout of a KMS data directory (0700)::

    kms.json        backend (file | pkcs11 + token), current KEK label, admin keys, quorum
    keys.json       per key: account, primary version, versions (state, KEK label,
                    RFC 5649 wrapped material, binding digest)
    kek/            the file backend's KEKs (0600 each)
    audit.jsonl     the hash-chained audit trail (sealroom.kms.audit)
    lockdowns.json  lockdown orders in force and lifted (sealroom.kms.lockdown)

A key version is ``active`` (released, usable), ``revoked`` (never released again, its
wrapped material kept so an operator can still see what existed) or ``destroyed`` (its
wrapped material erased). Rotation makes a new version the primary; revoking the primary
is refused (rotate first), so a live key always has one releasable primary.

``binding`` = SHA-256("sealroom/kms-key/v1\\0" || key_id || \\0 || version || \\0 ||
material) is checked after every unwrap: AES key wrap carries no associated data, so
without it a wrapped blob swapped between two versions would unwrap as the wrong key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sealroom.errors import AttestationError, ConflictError, InvalidInputError, NotFoundError
from sealroom.files import exclusive_lock, write_private
from sealroom.kms.audit import AuditLog
from sealroom.kms.kek import FileKekBackend, KekBackend, Pkcs11Config, Pkcs11KekBackend

CONFIG_NAME = "kms.json"
KEYS_NAME = "keys.json"
KEY_BYTES = 32
KEY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_BINDING_DOMAIN = b"sealroom/kms-key/v1\0"


def validate_key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
        raise InvalidInputError(
            f"key id {key_id!r}: want 1-64 characters from [A-Za-z0-9_.-], starting with a "
            "letter or digit",
            code="kms-invalid-key-id",
        )
    return key_id


def _binding(key_id: str, version: int, material: bytes) -> str:
    return hashlib.sha256(
        _BINDING_DOMAIN + key_id.encode() + b"\0" + str(version).encode() + b"\0" + material
    ).hexdigest()


@dataclass(frozen=True)
class KeyVersion:
    version: int
    state: str  # active | revoked | destroyed
    kek: str
    created_at: str


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    account: str
    primary: int | None
    versions: tuple[KeyVersion, ...]
    destroyed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "account": self.account,
            "primary": self.primary,
            "destroyed": self.destroyed,
            "versions": [
                {"version": v.version, "state": v.state, "kek": v.kek, "created_at": v.created_at}
                for v in self.versions
            ],
        }


def _backend_from(config: dict[str, Any], directory: Path) -> KekBackend:
    kind = config.get("backend", {}).get("kind")
    if kind == "file":
        return FileKekBackend(directory / "kek")
    if kind == "pkcs11":
        b = config["backend"]
        return Pkcs11KekBackend(
            Pkcs11Config(
                module=b["module"],
                token_label=b["token_label"],
                pin_env=b.get("pin_env") or "SEALROOM_KMS_PKCS11_PIN",
                pin_file=b.get("pin_file"),
            )
        )
    raise InvalidInputError(f"{directory / CONFIG_NAME}: unknown KEK backend {kind!r}")


class KeyManager:
    """Keys with versions in ``directory``; every change is audited (``actor`` says who)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        cfg_path = self.directory / CONFIG_NAME
        try:
            config: dict[str, Any] = json.loads(cfg_path.read_text())
        except FileNotFoundError as e:
            raise NotFoundError(
                f"{cfg_path}: no KMS here (sealroom kms init --data-dir {self.directory})",
                code="kms-not-initialised",
            ) from e
        self.backend = _backend_from(config, self.directory)
        self.audit = AuditLog(self.directory)

    @property
    def _config(self) -> dict[str, Any]:
        """``kms.json`` as it is now: another process (``sealroom kms lockdown`` next to a
        running ``sealroom kbs serve``) may have rotated the KEK since this one started."""
        config: dict[str, Any] = json.loads((self.directory / CONFIG_NAME).read_text())
        return config

    # ---- set-up ---------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        pkcs11: Pkcs11Config | None = None,
        admins: dict[str, str] | None = None,
        quorum: int = 1,
        actor: str = "operator",
    ) -> KeyManager:
        """Create a KMS in ``directory`` with its first KEK. ``admins`` maps
        admin names to Ed25519 public keys (hex) that sign lockdown and lift orders;
        ``quorum`` of them must sign a lift."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        if (directory / CONFIG_NAME).exists():
            raise ConflictError(f"{directory}: a KMS is already initialised here")
        admins = dict(admins or {})
        for name, hexkey in admins.items():
            if len(bytes.fromhex(hexkey)) != 32:
                raise InvalidInputError(f"admin {name}: Ed25519 public key must be 32 bytes")
        if admins and not 1 <= quorum <= len(admins):
            raise InvalidInputError(f"quorum {quorum}: want 1..{len(admins)} (admin keys given)")
        backend: dict[str, Any] = (
            {"kind": "pkcs11", **pkcs11.to_dict()} if pkcs11 else {"kind": "file"}
        )
        # KEK labels carry this KMS's id: several KMS directories may share one token.
        kms_id = secrets.token_hex(4)
        first = f"sealroom-{kms_id}-kek-1"
        config = {
            "sealroom_kms": 1,
            "id": kms_id,
            "backend": backend,
            "kek": first,
            "kek_serial": 1,
            "admins": admins,
            "quorum": quorum,
        }
        _backend_from(config, directory).create(first)
        write_private(
            directory / CONFIG_NAME, json.dumps(config, indent=2).encode(), overwrite=False
        )
        write_private(directory / KEYS_NAME, b"{}", overwrite=False, what="key store")
        km = cls(directory)
        km.audit.append(
            "kek-rotate", actor=actor, detail={"kek": first, "backend": backend["kind"]}
        )
        return km

    @property
    def admins(self) -> dict[str, str]:
        return dict(self._config.get("admins", {}))

    @property
    def quorum(self) -> int:
        return int(self._config.get("quorum", 1))

    @property
    def kek_label(self) -> str:
        return str(self._config["kek"])

    # ---- storage --------------------------------------------------------------------------

    def locked(self) -> AbstractContextManager[None]:
        return exclusive_lock(self.directory / ".kms.lock")

    def _load(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.directory / KEYS_NAME).read_text())
        return data

    def _save(self, keys: dict[str, Any]) -> None:
        write_private(
            self.directory / KEYS_NAME,
            json.dumps(keys, indent=1, sort_keys=True).encode(),
            overwrite=True,
            what="key store",
        )

    def _save_config(self, config: dict[str, Any]) -> None:
        write_private(
            self.directory / CONFIG_NAME,
            json.dumps(config, indent=2).encode(),
            overwrite=True,
        )

    @staticmethod
    def _get(keys: dict[str, Any], key_id: str) -> dict[str, Any]:
        rec = keys.get(validate_key_id(key_id))
        if rec is None:
            raise NotFoundError(f"key {key_id}: no such key", code="kms-key-not-found")
        if rec.get("destroyed"):
            raise NotFoundError(f"key {key_id}: destroyed", code="kms-key-destroyed")
        result: dict[str, Any] = rec
        return result

    def _new_version(self, key_id: str, version: int) -> dict[str, Any]:
        material = secrets.token_bytes(KEY_BYTES)
        wrapped = self.backend.wrap(self.kek_label, material)
        return {
            "version": version,
            "state": "active",
            "kek": self.kek_label,
            "wrapped": base64.b64encode(wrapped).decode(),
            "binding": _binding(key_id, version, material),
            "created_at": datetime.now(UTC).isoformat(),
        }

    @staticmethod
    def _info(key_id: str, rec: dict[str, Any]) -> KeyInfo:
        return KeyInfo(
            key_id=key_id,
            account=rec["account"],
            primary=rec.get("primary"),
            destroyed=bool(rec.get("destroyed")),
            versions=tuple(
                KeyVersion(v["version"], v["state"], v["kek"], v["created_at"])
                for v in rec["versions"]
            ),
        )

    # ---- operations -----------------------------------------------------------------------

    def create(self, key_id: str, *, account: str, actor: str) -> KeyInfo:
        validate_key_id(key_id)
        with self.locked():
            keys = self._load()
            if key_id in keys:
                raise ConflictError(f"key {key_id}: already exists", code="kms-key-exists")
            rec = {"account": account, "primary": 1, "versions": [self._new_version(key_id, 1)]}
            keys[key_id] = rec
            self._save(keys)
            self.audit.append(
                "key-create", actor=actor, key_id=key_id, version=1, detail={"account": account}
            )
            return self._info(key_id, rec)

    def rotate(self, key_id: str, *, actor: str, reason: str = "") -> KeyInfo:
        with self.locked():
            keys = self._load()
            rec = self._get(keys, key_id)
            version = max(v["version"] for v in rec["versions"]) + 1
            rec["versions"].append(self._new_version(key_id, version))
            rec["primary"] = version
            self._save(keys)
            self.audit.append(
                "key-rotate",
                actor=actor,
                key_id=key_id,
                version=version,
                detail={"reason": reason} if reason else None,
            )
            return self._info(key_id, rec)

    def revoke(
        self,
        key_id: str,
        version: int,
        *,
        actor: str,
        reason: str = "",
        rotate_primary: bool = False,
    ) -> KeyInfo:
        """Revoke one version; it is never released again. The primary can be revoked only
        with ``rotate_primary`` (a new primary is made in the same step)."""
        with self.locked():
            keys = self._load()
            rec = self._get(keys, key_id)
            v = self._version(rec, key_id, version)
            if v["state"] != "active":
                raise ConflictError(
                    f"key {key_id} v{version}: already {v['state']}", code="kms-version-not-active"
                )
            if rec["primary"] == version and not rotate_primary:
                raise ConflictError(
                    f"key {key_id} v{version} is the primary; rotate first (or revoke with "
                    "rotation)",
                    code="kms-revoke-primary",
                )
            v["state"] = "revoked"
            self.audit.append(
                "key-revoke",
                actor=actor,
                key_id=key_id,
                version=version,
                detail={"reason": reason} if reason else None,
            )
            if rec["primary"] == version:
                new = max(x["version"] for x in rec["versions"]) + 1
                rec["versions"].append(self._new_version(key_id, new))
                rec["primary"] = new
                self.audit.append(
                    "key-rotate",
                    actor=actor,
                    key_id=key_id,
                    version=new,
                    detail={"reason": f"primary v{version} revoked"},
                )
            self._save(keys)
            return self._info(key_id, rec)

    def destroy(self, key_id: str, *, actor: str) -> None:
        """Erase every version's wrapped material; the id stays taken (and listed)."""
        with self.locked():
            keys = self._load()
            rec = self._get(keys, key_id)
            for v in rec["versions"]:
                v["state"] = "destroyed"
                v.pop("wrapped", None)
                v.pop("binding", None)
            rec["primary"] = None
            rec["destroyed"] = True
            self._save(keys)
            self.audit.append("key-destroy", actor=actor, key_id=key_id)

    def list(self) -> list[KeyInfo]:
        return [self._info(k, rec) for k, rec in sorted(self._load().items())]

    def info(self, key_id: str) -> KeyInfo:
        rec = self._load().get(validate_key_id(key_id))
        if rec is None:
            raise NotFoundError(f"key {key_id}: no such key", code="kms-key-not-found")
        return self._info(key_id, rec)

    @staticmethod
    def _version(rec: dict[str, Any], key_id: str, version: int) -> dict[str, Any]:
        for v in rec["versions"]:
            if v["version"] == version:
                found: dict[str, Any] = v
                return found
        raise NotFoundError(f"key {key_id}: no version {version}", code="kms-version-not-found")

    def material(self, key_id: str, version: int | None = None) -> tuple[int, bytes]:
        """The plaintext of an active version (the primary when ``version`` is None), as
        (version, bytes). Revoked or destroyed versions are AccessDeniedError."""
        from sealroom.errors import AccessDeniedError

        rec = self._get(self._load(), key_id)
        number = rec["primary"] if version is None else version
        v = self._version(rec, key_id, number)
        if v["state"] != "active":
            raise AccessDeniedError(
                f"key {key_id} v{number} is {v['state']}", code="kms-version-not-active"
            )
        material = self.backend.unwrap(v["kek"], base64.b64decode(v["wrapped"]))
        if _binding(key_id, number, material) != v["binding"]:
            raise AttestationError(
                f"key {key_id} v{number}: unwrapped material does not match its binding "
                "(wrapped key swapped or store tampered)",
                code="kms-binding-mismatch",
            )
        return number, material

    def rotate_kek(self, *, actor: str, reason: str = "") -> tuple[str, str]:
        """A new KEK; every live version is re-wrapped under it; the old KEK is destroyed.
        Returns (old, new) labels."""
        with self.locked():
            keys = self._load()
            config = self._config
            old = str(config["kek"])
            serial = int(config.get("kek_serial", 1)) + 1
            new = f"sealroom-{config['id']}-kek-{serial}"
            self.backend.create(new)
            for key_id, rec in keys.items():
                for v in rec["versions"]:
                    if "wrapped" not in v:
                        continue
                    material = self.backend.unwrap(v["kek"], base64.b64decode(v["wrapped"]))
                    if _binding(key_id, v["version"], material) != v["binding"]:
                        raise AttestationError(
                            f"key {key_id} v{v['version']}: binding mismatch",
                            code="kms-binding-mismatch",
                        )
                    v["wrapped"] = base64.b64encode(self.backend.wrap(new, material)).decode()
                    v["kek"] = new
            self._save(keys)
            config["kek"] = new
            config["kek_serial"] = serial
            self._save_config(config)
            self.backend.destroy(old)
            self.audit.append(
                "kek-rotate",
                actor=actor,
                detail={"old": old, "new": new, "old_destroyed": True, "reason": reason},
            )
            return old, new
