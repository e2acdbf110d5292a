"""C2SP tlog-proof (c2sp.org/tlog-proof@v1): an offline-verifiable proof that an entry is in
the log — the first line ``c2sp.org/tlog-proof@v1``, an optional ``extra <base64>`` line,
``index <n>``, the inclusion proof hashes (base64, one per line, leaf sibling first), an
empty line, then the checkpoint verbatim. Verification ("Verifying a tlog proof"): compute
the leaf hash (the caller's, from the document it holds), check the checkpoint's origin and
signature with keys the verifier chose, then the inclusion proof against its root."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from sealroom.errors import InvalidInputError
from sealroom.tlog import note
from sealroom.tlog.checkpoint import Checkpoint, open_checkpoint
from sealroom.tlog.merkle import HASH_SIZE, verify_inclusion

HEADER = "c2sp.org/tlog-proof@v1"


def _malformed(what: str) -> InvalidInputError:
    return InvalidInputError(what, code="tlog-proof-malformed")


@dataclass(frozen=True)
class TlogProof:
    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str  # the signed note, verbatim
    extra: bytes | None = None

    def encode(self) -> str:
        lines = [HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(h).decode() for h in self.hashes]
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def parse(cls, data: bytes | str) -> TlogProof:
        try:
            s = data.decode("utf-8") if isinstance(data, bytes) else data
        except UnicodeDecodeError as e:
            raise _malformed(f"tlog proof is not UTF-8: {e}") from e
        head, sep, checkpoint = s.partition("\n\n")
        if not sep:
            raise _malformed("tlog proof has no empty line before its checkpoint")
        lines = head.split("\n")
        if lines[0] != HEADER:
            raise _malformed(f"tlog proof does not start with {HEADER}")
        i, extra = 1, None
        if i < len(lines) and lines[i].startswith("extra "):
            try:
                extra = base64.b64decode(lines[i][6:], validate=True)
            except binascii.Error as e:
                raise _malformed(f"tlog proof extra line is not base64: {e}") from e
            i += 1
        m = re.fullmatch(r"index (0|[1-9][0-9]{0,19})", lines[i] if i < len(lines) else "")
        if m is None:
            raise _malformed("tlog proof has no 'index N' line")
        hashes = []
        for line in lines[i + 1 :]:
            try:
                h = base64.b64decode(line, validate=True)
            except binascii.Error as e:
                raise _malformed(f"tlog proof hash is not base64: {e}") from e
            if len(h) != HASH_SIZE:
                raise _malformed(f"tlog proof hash is {len(h)} bytes, want {HASH_SIZE}")
            hashes.append(h)
        return cls(int(m.group(1)), tuple(hashes), checkpoint, extra)

    def verify(
        self,
        leaf_hash: bytes,
        verifiers: list[note.Verifier] | tuple[note.Verifier, ...],
        origin: str | None = None,
    ) -> Checkpoint:
        """Steps 2 and 4 of "Verifying a tlog proof" (no witnesses are configured: step 3
        has nothing to check). Returns the verified checkpoint."""
        cp = open_checkpoint(self.checkpoint, verifiers, origin)
        verify_inclusion(leaf_hash, self.index, cp.size, self.hashes, cp.root_hash)
        return cp
