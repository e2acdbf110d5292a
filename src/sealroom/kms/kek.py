"""Key-encryption keys (KEKs): where the key that wraps every data key lives.

A :class:`KekBackend` holds KEKs by label and wraps/unwraps data-key material under them;
the material of a KEK never leaves the backend through this interface. Two backends:

- :class:`FileKekBackend` (the default, for the embedded set-up): one 32-byte AES key per
  label in ``DIR/NAME.kek``, mode 0600 (:func:`sealroom.files.write_private`), wrapping
  with AES key wrap with padding (RFC 5649) from pyca/cryptography.
- :class:`Pkcs11KekBackend`: the KEK is generated *inside* a PKCS#11 token (python-pkcs11;
  tested against SoftHSM2) as a non-extractable, sensitive AES-256 token object; wrapping
  and unwrapping are ``C_WrapKey``/``C_UnwrapKey`` with ``CKM_AES_KEY_WRAP_PAD`` in the
  token. The data key travels as a short-lived session object.

Both backends produce RFC 5649 ciphertexts, so the two are interchangeable for a reader
that holds the KEK (tests check this with the file backend's primitive).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from sealroom.errors import AttestationError, InvalidInputError, NotFoundError, UnavailableError
from sealroom.files import write_private

KEK_BYTES = 32
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _label(label: str) -> str:
    if not LABEL_RE.fullmatch(label):
        raise InvalidInputError(f"KEK label {label!r} is not [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")
    return label


def _unwrap_failed(label: str) -> AttestationError:
    return AttestationError(
        f"KEK {label}: the wrapped key does not unwrap (wrong KEK or tampered ciphertext)",
        code="kms-unwrap-failed",
    )


class KekBackend(Protocol):
    """Holds KEKs by label; their material never leaves through this interface."""

    name: str

    def create(self, label: str) -> None:
        """Generate a fresh KEK under ``label`` (ConflictError-free: a label is new)."""
        ...

    def exists(self, label: str) -> bool: ...

    def wrap(self, label: str, material: bytes) -> bytes: ...

    def unwrap(self, label: str, wrapped: bytes) -> bytes: ...

    def destroy(self, label: str) -> None:
        """Remove the KEK; wrapped keys under it can never be unwrapped again."""
        ...


class FileKekBackend:
    """KEKs as 0600 files in one 0700 directory (the embedded set-up)."""

    name = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, label: str) -> Path:
        return self.directory / f"{_label(label)}.kek"

    def create(self, label: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        write_private(
            self._path(label), secrets.token_bytes(KEK_BYTES), overwrite=False, what="KEK"
        )

    def exists(self, label: str) -> bool:
        return self._path(label).is_file()

    def _load(self, label: str) -> bytes:
        path = self._path(label)
        try:
            st = path.stat()
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise NotFoundError(f"KEK {label}: no such key in {self.directory}") from e
        if st.st_mode & 0o077:
            raise InvalidInputError(
                f"KEK file {path} has mode {st.st_mode & 0o777:o}: group or others may read "
                "it; want 0600",
                code="kms-kek-permissions",
            )
        if len(data) != KEK_BYTES:
            raise InvalidInputError(f"KEK file {path}: {len(data)} bytes, want {KEK_BYTES}")
        return data

    def wrap(self, label: str, material: bytes) -> bytes:
        return aes_key_wrap_with_padding(self._load(label), material)

    def unwrap(self, label: str, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap_with_padding(self._load(label), wrapped)
        except InvalidUnwrap as e:
            raise _unwrap_failed(label) from e

    def destroy(self, label: str) -> None:
        path = self._path(label)
        with contextlib.suppress(FileNotFoundError):
            # Overwrite before unlinking (best effort on journaling file systems).
            size = path.stat().st_size
            with open(path, "r+b", buffering=0) as f:
                f.write(b"\0" * size)
                os.fsync(f.fileno())
            path.unlink()


@dataclass(frozen=True)
class Pkcs11Config:
    """Where the token is. The user PIN is read from the environment variable
    ``pin_env`` or the 0600 file ``pin_file`` at use, never from argv."""

    module: str
    token_label: str
    pin_env: str = "SEALROOM_KMS_PKCS11_PIN"
    pin_file: str | None = None

    def pin(self) -> str:
        if self.pin_file:
            path = Path(self.pin_file)
            if path.stat().st_mode & 0o077:
                raise InvalidInputError(f"PIN file {path}: group or others may read it")
            return path.read_text().strip()
        pin = os.environ.get(self.pin_env)
        if not pin:
            raise InvalidInputError(
                f"PKCS#11 user PIN: set {self.pin_env} or give a 0600 pin file",
                code="kms-pkcs11-pin-missing",
            )
        return pin

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "token_label": self.token_label,
            "pin_env": self.pin_env,
            "pin_file": self.pin_file,
        }


class Pkcs11KekBackend:
    """KEKs generated in a PKCS#11 token, non-extractable; wrap/unwrap in the token."""

    name = "pkcs11"

    def __init__(self, config: Pkcs11Config) -> None:
        self.config = config

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        try:
            import pkcs11
        except ImportError as e:  # the [hsm] extra
            raise UnavailableError(
                "PKCS#11 KEK backend needs python-pkcs11 (pip install 'sealroom[hsm]')",
                code="kms-pkcs11-unavailable",
            ) from e
        try:
            lib = pkcs11.lib(self.config.module)
            token = lib.get_token(token_label=self.config.token_label)
            session = token.open(user_pin=self.config.pin(), rw=True)
        except pkcs11.PKCS11Error as e:
            raise UnavailableError(
                f"PKCS#11 token {self.config.token_label!r} in {self.config.module}: "
                f"{type(e).__name__} {e}",
                code="kms-pkcs11-unavailable",
            ) from e
        try:
            yield session
        finally:
            session.close()

    @staticmethod
    def _find(session: Any, label: str) -> Any:
        import pkcs11
        from pkcs11 import ObjectClass

        try:
            return session.get_key(object_class=ObjectClass.SECRET_KEY, label=_label(label))
        except pkcs11.NoSuchKey as e:
            raise NotFoundError(f"KEK {label}: no such key in the token") from e
        except pkcs11.MultipleObjectsReturned as e:
            raise InvalidInputError(f"KEK {label}: several token objects carry this label") from e

    def create(self, label: str) -> None:
        from pkcs11 import Attribute, KeyType

        with self._session() as s:
            if list(s.get_objects({Attribute.LABEL: _label(label)})):
                raise InvalidInputError(f"KEK {label}: the token already holds this label")
            s.generate_key(
                KeyType.AES,
                256,
                label=label,
                store=True,
                template={
                    Attribute.EXTRACTABLE: False,
                    Attribute.SENSITIVE: True,
                    Attribute.WRAP: True,
                    Attribute.UNWRAP: True,
                    Attribute.ENCRYPT: False,
                    Attribute.DECRYPT: False,
                },
            )

    def exists(self, label: str) -> bool:
        from pkcs11 import Attribute

        with self._session() as s:
            return bool(list(s.get_objects({Attribute.LABEL: _label(label)})))

    def wrap(self, label: str, material: bytes) -> bytes:
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

        with self._session() as s:
            kek = self._find(s, label)
            tmp = s.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                    Attribute.VALUE: material,
                    Attribute.TOKEN: False,
                    Attribute.EXTRACTABLE: True,
                    Attribute.SENSITIVE: False,
                }
            )
            try:
                return bytes(kek.wrap_key(tmp, mechanism=Mechanism.AES_KEY_WRAP_PAD))
            finally:
                tmp.destroy()

    def unwrap(self, label: str, wrapped: bytes) -> bytes:
        import pkcs11
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

        with self._session() as s:
            kek = self._find(s, label)
            try:
                obj = kek.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.GENERIC_SECRET,
                    wrapped,
                    mechanism=Mechanism.AES_KEY_WRAP_PAD,
                    store=False,
                    template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
                )
            except pkcs11.PKCS11Error as e:
                raise _unwrap_failed(label) from e
            try:
                return bytes(obj[Attribute.VALUE])
            finally:
                obj.destroy()

    def destroy(self, label: str) -> None:
        with self._session() as s, contextlib.suppress(NotFoundError):
            self._find(s, label).destroy()
