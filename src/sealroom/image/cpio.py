"""A reproducible ``newc`` cpio archive (the initramfs format the kernel unpacks).

Entries are written in sorted path order with mtime 0, uid/gid 0 and inode numbers
assigned in that order, so the same entries always give the same bytes (the format as
the kernel reads it: ``Documentation/driver-api/early-userspace/buffer-format.rst``).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    path: str  # without a leading "/"
    mode: int  # file type and permission bits (stat.S_IFREG | 0o755, ...)
    data: bytes = b""  # file contents, or a symlink's target
    rdev: tuple[int, int] = (0, 0)  # a device node's major, minor


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, e: Entry, nlink: int, size: int, name: bytes) -> bytes:
    fields = (
        ino, e.mode, 0, 0, nlink, 0, size, 0, 0, e.rdev[0], e.rdev[1], len(name) + 1, 0,
    )  # fmt: skip
    return MAGIC + b"".join(b"%08X" % f for f in fields)


def archive(entries: list[Entry]) -> bytes:
    """The cpio archive of ``entries`` (sorted by path; duplicates refused)."""
    out = bytearray()
    seen: set[str] = set()
    for ino, e in enumerate(sorted(entries, key=lambda x: x.path), start=1):
        path = e.path.strip("/")
        if not path or path in seen:
            raise ValueError(f"cpio: empty or duplicate path {e.path!r}")
        seen.add(path)
        if not stat.S_IFMT(e.mode):
            raise ValueError(f"cpio: {path}: mode {e.mode:o} has no file type")
        name = path.encode()
        nlink = 2 if stat.S_ISDIR(e.mode) else 1
        body = e.data if (stat.S_ISREG(e.mode) or stat.S_ISLNK(e.mode)) else b""
        head = _header(ino, e, nlink, len(body), name) + name + b"\0"
        out += head + _pad4(len(head)) + body + _pad4(len(body))
    end = Entry(TRAILER, stat.S_IFREG)
    head = _header(0, end, 1, 0, TRAILER.encode()) + TRAILER.encode() + b"\0"
    out += head + _pad4(len(head))
    return bytes(out)
