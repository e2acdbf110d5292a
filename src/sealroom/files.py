"""Writing private files (keys, credentials, config): one careful implementation.

Bottom layer: imports only the standard library and sealroom.errors.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from sealroom.errors import InvalidInputError


def write_private(path: Path, data: bytes, *, overwrite: bool, what: str = "file") -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically and durably.

    A temporary file in the same directory (O_EXCL, O_NOFOLLOW, 0600 whatever the umask)
    is written and fsynced, then renamed over ``path`` (``overwrite=True``) or hard-linked
    to it (``overwrite=False``: atomic, and FileExistsError if the name exists, so two
    writers cannot both win); the directory is fsynced last. Other failures are
    InvalidInputError naming ``what``.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600
        )
    except OSError as e:
        raise InvalidInputError(
            f"cannot write {what} {path}: {e.strerror or e}", code="write-failed"
        ) from e
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        raise InvalidInputError(
            f"cannot write {what} {path}: {e.strerror or e}", code="write-failed"
        ) from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
