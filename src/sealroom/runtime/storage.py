"""Enclave storage: where a computation keeps uploads, the algorithm, its results and the
sealed blobs while it runs (docs/adr/0017-sealed-run-logs.md, "storage").

Where the runtime may mount (root, i.e. CAP_SYS_ADMIN), it first moves itself into a
mount namespace of its own, then mounts a tmpfs there, sized from the manifest's limits:
nothing of the run is ever written to a disk, the host cannot see the mount, and the
kernel frees it when the runtime's last process is gone, even after ``kill -9``. Where it
may not, storage is a 0700 directory on disk, and the storage says so (``kind`` and
``note``): no silent downgrade. Either way ``close()`` wipes it without ever raising
(sealroom.files.wipe_tree), whatever the algorithm did to the tree.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sealroom.files import WipeReport, wipe_tree

# <sched.h>, <sys/mount.h>
CLONE_NEWNS = 0x0002_0000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REC = 0x4000
MS_PRIVATE = 0x4_0000
MNT_DETACH = 0x2

StorageKind = Literal["tmpfs", "disk"]
StorageMode = Literal["auto", "tmpfs", "disk"]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def _call(what: str, rc: int) -> str | None:
    if rc == 0:
        return None
    return f"{what}: {os.strerror(ctypes.get_errno())}"


def private_mount_namespace() -> str | None:
    """Move this process into a mount namespace of its own, with every mount private
    (nothing propagates to the host). Must run before the process starts a thread (the
    kernel refuses to unshare a shared filesystem context). Returns None when done,
    else why not."""
    if os.geteuid() != 0:
        return "the runtime is not root (mounting needs CAP_SYS_ADMIN)"
    libc = _libc()
    return _call("unshare(CLONE_NEWNS)", libc.unshare(CLONE_NEWNS)) or _call(
        "making / a private mount", libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
    )


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class EnclaveStorage:
    path: Path
    kind: StorageKind
    size_bytes: int | None  # the tmpfs's size; None on disk
    note: str  # on disk: why not a tmpfs

    @classmethod
    def create(
        cls, base: Path | None, size_bytes: int, *, mode: StorageMode, namespace_note: str | None
    ) -> EnclaveStorage:
        """A fresh 0700 directory under ``base`` (default: the temporary directory),
        with a tmpfs of ``size_bytes`` mounted on it when ``mode`` allows it and the
        runtime is in a private mount namespace (``namespace_note`` is None)."""
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="sealroom-enclave-", dir=base))
        if mode == "disk":
            return cls(path, "disk", None, "enclave storage on disk (--storage disk)")
        why = namespace_note
        if why is None and size_bytes > _memory_bytes() // 2:
            why = (
                f"the manifest's limits need up to {size_bytes} bytes of storage, more than "
                f"half of this machine's memory ({_memory_bytes()} bytes)"
            )
        if why is None:
            opts = f"size={size_bytes},mode=0700,nr_inodes=0".encode()
            why = _call(
                "mount tmpfs",
                _libc().mount(
                    b"sealroom-enclave",
                    os.fsencode(path),
                    b"tmpfs",
                    MS_NOSUID | MS_NODEV,
                    opts,
                ),
            )
        if why is None:
            return cls(path, "tmpfs", size_bytes, "")
        return cls(path, "disk", None, f"enclave storage on disk, not tmpfs: {why}")

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "bytes": self.size_bytes, "note": self.note}

    def close(self) -> WipeReport:
        """Wipe everything, unmount, remove the directory. Never raises."""
        report = wipe_tree(self.path, keep_root=True)
        if self.kind == "tmpfs":
            umount = _call("umount", _libc().umount2(os.fsencode(self.path), MNT_DETACH))
            if umount is not None:
                report.failures += 1
                report.left.append(f".: {umount}")
        rest = wipe_tree(self.path)
        report.removed += rest.removed
        report.failures += rest.failures
        report.left += rest.left
        return report
