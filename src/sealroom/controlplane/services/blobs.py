"""Filesystem blob store for sealed results, sealed run logs and receipts (ciphertext and
signed JSON only;
the control plane never holds a key that opens them).

Layout: ``<root>/<computation_id>/<name>``. Writes go to a temporary file in the same
directory, are fsynced and checked against the SHA-256 the agent declared, then renamed
into place, so a reader sees either the whole blob or none.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from sealroom.errors import InvalidInputError, NotFoundError

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")
_NAME_RE = re.compile(r"receipt|(result|log)\.[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_blob_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidInputError(
            f"blob name {name[:80]!r} is not 'receipt', 'result.<consumer>' or 'log.<reader>'",
            code="invalid-blob-name",
        )
    return name


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _dir(self, computation_id: str) -> Path:
        if not _ID_RE.fullmatch(computation_id):
            raise InvalidInputError(f"computation id {computation_id[:60]!r} is malformed")
        return self.root / computation_id

    def writer(self, computation_id: str, name: str) -> BlobWriter:
        """A temporary file next to the blob's final place; ``check`` compares the SHA-256,
        ``commit`` renames it into place, ``abort`` removes it."""
        check_blob_name(name)
        d = self._dir(computation_id)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return BlobWriter(d, name)

    def put(self, computation_id: str, name: str, chunks: Iterable[bytes], sha256_hex: str) -> int:
        """Store a blob; raise InvalidInputError (nothing stored) if its SHA-256 differs
        from ``sha256_hex``. Returns the size."""
        w = self.writer(computation_id, name)
        try:
            for chunk in chunks:
                w.write(chunk)
            w.check(sha256_hex)
            w.commit()
        finally:
            w.abort()
        return w.size

    def path(self, computation_id: str, name: str) -> Path:
        check_blob_name(name)
        p = self._dir(computation_id) / name
        if not p.is_file():
            raise NotFoundError(
                f"computation {computation_id} has no blob {name!r}", code="blob-not-found"
            )
        return p

    def read(self, computation_id: str, name: str) -> bytes:
        return self.path(computation_id, name).read_bytes()

    def delete_all(self, computation_id: str) -> None:
        shutil.rmtree(self._dir(computation_id), ignore_errors=True)


class BlobWriter:
    """One blob being written: streamed to a 0600 temporary file, hashed on the way."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.final = directory / name
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        self.tmp = Path(tmp)
        self._f = os.fdopen(fd, "wb")
        self._h = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._h.update(chunk)
        self.size += len(chunk)
        self._f.write(chunk)

    def check(self, sha256_hex: str) -> None:
        """Close the file; raise (nothing stored) if its SHA-256 is not ``sha256_hex``."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        got = self._h.hexdigest()
        if got != sha256_hex.lower():
            raise InvalidInputError(
                f"blob {self.name}: SHA-256 is {got}, X-Sealroom-Sha256 says {sha256_hex}",
                code="blob-hash-mismatch",
            )

    def read(self) -> bytes:
        """The checked bytes (small blobs: the receipt)."""
        return self.tmp.read_bytes()

    def commit(self) -> None:
        """Move the checked file into place: readers see the whole blob or none."""
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        """Drop the temporary file (a no-op after a successful commit)."""
        if not self._f.closed:
            self._f.close()
        self.tmp.unlink(missing_ok=True)
