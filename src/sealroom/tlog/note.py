"""C2SP signed-note (c2sp.org/signed-note): note text, Ed25519 signature lines, key IDs and
verifier keys ("vkeys").

Format (signed-note "Format"): the text ends in a newline, then one blank line, then one or
more lines ``— <key name> base64(key ID || signature)``. Key ID (signed-note "Signatures",
"Ed25519 signatures"): ``SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]``.
Verifier key (signed-note "Verifier keys"): ``<name>+hex(key ID)+base64(0x01 || public
key)``. Only Ed25519 (type 0x01) is implemented; signatures by keys the verifier does not
know are ignored, a known key's bad signature rejects the note, and a note with no
verified known signature is rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sealroom.errors import AttestationError, InvalidInputError

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 64  # signed-note: verifiers MUST accept at least 16
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def _malformed(what: str) -> InvalidInputError:
    return InvalidInputError(what, code="tlog-note-malformed")


def check_key_name(name: str) -> str:
    """Key names are non-empty, without Unicode spaces or '+' (signed-note "Format")."""
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise InvalidInputError(
            f"note key name {name[:80]!r} is empty or has a space or '+'", code="tlog-key-name"
        )
    return name


def key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian (signed-note)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """One trusted Ed25519 note key: name, key ID, public key."""

    name: str
    key_id: int
    public_key: bytes

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """``<name>+<8 hex key ID>+base64(0x01 || key)``; the ID must match the key."""
        # the name has no "+", the base64 key may: split at the first two only
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise _malformed("verifier key is not <name>+<key id>+<base64 key>")
        name, hid, b64 = parts
        check_key_name(name)
        if not re.fullmatch(r"[0-9a-f]{8}", hid):
            raise _malformed(f"verifier key ID {hid[:16]!r} is not 8 lowercase hex digits")
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error as e:
            raise _malformed(f"verifier key is not base64: {e}") from e
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise _malformed("verifier key is not an Ed25519 (type 0x01, 32-byte) key")
        kid = int(hid, 16)
        if kid != key_id(name, raw[1:]):
            raise _malformed(f"verifier key ID {hid} does not match its name and key")
        return cls(name, kid, raw[1:])

    def vkey(self) -> str:
        b64 = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{b64}"

    def verify(self, text: bytes, sig: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(sig, text)
        except InvalidSignature:
            return False
        return True


class Signer:
    """An Ed25519 note key (the log's checkpoint key)."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self._key = key
        self.verifier = Verifier(name, key_id(name, _raw(key.public_key())), _raw(key.public_key()))

    def sign_line(self, text: bytes) -> str:
        sig = self.verifier.key_id.to_bytes(4, "big") + self._key.sign(text)
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(sig).decode()}\n"


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: int
    sig: bytes


@dataclass(frozen=True)
class Note:
    text: bytes  # ends in a newline
    signatures: tuple[Signature, ...]


def sign(text: str, *signers: Signer) -> str:
    if not text.endswith("\n"):
        raise ValueError("note text must end in a newline")
    check_text(text)
    body = text.encode()
    return text + "\n" + "".join(s.sign_line(body) for s in signers)


def check_text(text: str) -> None:
    if _CONTROL.search(text):
        raise _malformed("note has an ASCII control character other than newline")


def parse(data: bytes | str) -> Note:
    """Split a signed note into text and signature lines (signed-note "Format")."""
    try:
        s = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise _malformed(f"note is not UTF-8: {e}") from e
    check_text(s)
    if not s.endswith("\n"):
        raise _malformed("note does not end in a newline")
    # the text is separated from the signatures by the LAST empty line
    cut = s.rfind("\n\n")
    if cut < 0:
        raise _malformed("note has no blank line before its signatures")
    text, sigs = s[: cut + 1], s[cut + 2 :]
    out = []
    for line in sigs.split("\n")[:-1]:
        if not line.startswith(SIG_PREFIX):
            raise _malformed(f"note signature line {line[:60]!r} does not start with an em dash")
        name, sp, b64 = line[len(SIG_PREFIX) :].rpartition(" ")
        if not sp:
            raise _malformed("note signature line has no key name")
        check_key_name(name)
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error as e:
            raise _malformed(f"note signature is not base64: {e}") from e
        if len(raw) < 5:
            raise _malformed("note signature is shorter than its key ID")
        out.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    if not out:
        raise _malformed("note has no signature lines")
    if len(out) > MAX_SIGNATURES:
        raise _malformed(f"note has {len(out)} signatures, at most {MAX_SIGNATURES} accepted")
    return Note(text.encode(), tuple(out))


def open_note(data: bytes | str, verifiers: list[Verifier] | tuple[Verifier, ...]) -> Note:
    """Parse and verify: signatures from unknown keys (name and ID not both matching) are
    ignored; a known key's signature that fails rejects the note; at least one known
    signature must verify. Returns the note with only its verified signatures."""
    note = parse(data)
    known = {(v.name, v.key_id): v for v in verifiers}
    good = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        if not v.verify(note.text, sig.sig):
            raise AttestationError(
                f"note signature by {sig.name} ({sig.key_id:08x}) does not verify",
                code="tlog-signature-invalid",
            )
        good.append(sig)
    if not good:
        names = ", ".join(f"{v.name}+{v.key_id:08x}" for v in verifiers) or "none"
        raise AttestationError(
            f"note is not signed by a trusted key (trusted: {names})",
            code="tlog-signature-missing",
        )
    return Note(note.text, tuple(good))
