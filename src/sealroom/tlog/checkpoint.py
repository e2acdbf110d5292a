"""C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint): a signed note whose text is the origin,
the tree size (decimal, no leading zeroes) and the base64 root hash, each on its own line,
then optional non-empty extension lines (section "Note text")."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from sealroom.errors import InvalidInputError
from sealroom.tlog import note
from sealroom.tlog.merkle import HASH_SIZE


def _malformed(what: str) -> InvalidInputError:
    return InvalidInputError(what, code="tlog-checkpoint-malformed")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text (ends in a newline)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    def sign(self, *signers: note.Signer) -> str:
        return note.sign(self.text(), *signers)

    @classmethod
    def parse_text(cls, text: bytes) -> Checkpoint:
        try:
            lines = text.decode("utf-8").split("\n")
        except UnicodeDecodeError as e:
            raise _malformed(f"checkpoint is not UTF-8: {e}") from e
        if lines[-1] != "" or len(lines) < 4:
            raise _malformed("checkpoint text has fewer than three lines")
        origin, size_s, root_s, *ext = lines[:-1]
        if not origin:
            raise _malformed("checkpoint origin line is empty")
        if not re.fullmatch(r"0|[1-9][0-9]{0,19}", size_s):
            raise _malformed(f"checkpoint tree size {size_s[:24]!r} is not a decimal")
        try:
            root = base64.b64decode(root_s, validate=True)
        except binascii.Error as e:
            raise _malformed(f"checkpoint root hash is not base64: {e}") from e
        if len(root) != HASH_SIZE:
            raise _malformed(f"checkpoint root hash is {len(root)} bytes, want {HASH_SIZE}")
        if any(not e for e in ext):
            raise _malformed("checkpoint has an empty extension line")
        return cls(origin, int(size_s), root, tuple(ext))


def open_checkpoint(
    data: bytes | str,
    verifiers: list[note.Verifier] | tuple[note.Verifier, ...],
    origin: str | None = None,
) -> Checkpoint:
    """Verify the note's signature with keys the *verifier* chose, then parse the text.
    ``origin``: the log identity the verifier expects (None: the name of the key)."""
    n = note.open_note(data, verifiers)
    cp = Checkpoint.parse_text(n.text)
    want = origin if origin is not None else None
    if want is None:
        signer_names = {s.name for s in n.signatures}
        # signed-note/tlog-checkpoint: the log's key name SHOULD match the origin; a
        # checkpoint for another origin signed by a trusted key is still another log
        if cp.origin not in signer_names:
            raise InvalidInputError(
                f"checkpoint origin {cp.origin!r} is not the name of the key that signed it",
                code="tlog-origin-mismatch",
            )
    elif cp.origin != want:
        raise InvalidInputError(
            f"checkpoint origin is {cp.origin!r}, expected {want!r}", code="tlog-origin-mismatch"
        )
    return cp
