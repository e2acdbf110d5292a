"""Writing private files (keys, credentials, config) and wiping trees someone else
filled: one careful implementation of each.

Bottom layer: imports only the standard library and sealroom.errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600 if missing) for the block:
    one writer at a time across processes sharing a directory."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---- wiping a tree ------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_REPORTED = 20


@dataclass
class WipeReport:
    """What :func:`wipe_tree` did: entries removed, and what it could not remove (the
    first MAX_REPORTED paths, relative to the wiped root, with the reason)."""

    removed: int = 0
    left: list[str] = field(default_factory=list)
    failures: int = 0

    @property
    def clean(self) -> bool:
        return self.failures == 0

    def _fail(self, where: str, e: BaseException) -> None:
        self.failures += 1
        if len(self.left) < MAX_REPORTED:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self.left.append(f"{where or '.'}: {why}")


@dataclass
class _Frame:
    name: str  # in the parent directory ("" for the root)
    ident: tuple[int, int]  # (st_dev, st_ino): going up by ".." must land here
    rel: str
    pending: list[str] | None = None  # subdirectories still to wipe


def _open_dir(name: str, dir_fd: int | None) -> int:
    """Open a directory without following links; a directory its owner made unreadable
    (chmod 000) is made 0700 first (we own it, or are root)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        # By name: Linux cannot chmod a link itself, and this entry is a directory.
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _retry_writable(fd: int, op: Callable[[], None]) -> None:
    """``op`` removes an entry of the directory ``fd``; a read-only directory is made
    0700 and ``op`` tried once more."""
    try:
        op()
    except PermissionError:
        os.fchmod(fd, 0o700)
        op()


def _empty_files(fd: int, frame: _Frame, report: WipeReport) -> list[str]:
    """Unlink every non-directory in ``fd`` (links themselves, never their targets);
    return the names of its subdirectories."""
    subdirs: list[str] = []
    with os.scandir(fd) as it:
        for entry in it:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(name)
                    continue
                _retry_writable(fd, functools.partial(os.unlink, name, dir_fd=fd))
                report.removed += 1
            except OSError as e:
                report._fail(f"{frame.rel}/{name}".lstrip("/"), e)
    return subdirs


def wipe_tree(path: Path, *, keep_root: bool = False) -> WipeReport:
    """Remove ``path`` and everything under it, whatever its owner did to it; never raises.

    Written for trees an untrusted program filled (an algorithm's results, enclave
    storage): iterative (any depth; no recursion, two descriptors open at a time), by
    descriptor (no path length limit, symbolic links are removed, never followed),
    directories made searchable and writable where their owner took that away (chmod
    000, read-only). Returns what it removed and what it could not (a mount point,
    another user's file when not root); ``keep_root`` leaves ``path`` itself (empty).
    """
    report = WipeReport()
    try:
        _wipe(Path(path), keep_root, report)
    except Exception as e:
        report._fail("", e)
    return report


def _wipe(path: Path, keep_root: bool, report: WipeReport) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        if not keep_root:
            os.unlink(path)
            report.removed += 1
        return
    fd = _open_dir(str(path), None)
    try:
        root = os.fstat(fd)
        frames = [_Frame("", (root.st_dev, root.st_ino), "")]
        while frames:
            top = frames[-1]
            if top.pending is None:
                try:
                    top.pending = _empty_files(fd, top, report)
                except OSError as e:
                    report._fail(top.rel, e)
                    top.pending = []
            if top.pending:
                name = top.pending.pop()
                rel = f"{top.rel}/{name}".lstrip("/")
                try:
                    child = _open_dir(name, fd)
                except OSError as e:
                    report._fail(rel, e)
                    continue
                cst = os.fstat(child)
                os.close(fd)
                fd = child
                frames.append(_Frame(name, (cst.st_dev, cst.st_ino), rel))
                continue
            frames.pop()
            if not frames:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            pst = os.fstat(parent)
            os.close(fd)
            fd = parent
            if (pst.st_dev, pst.st_ino) != frames[-1].ident:
                # Someone moved a directory while we worked: stop rather than guess.
                raise RuntimeError(f"{top.rel}: its parent changed during the wipe")
            try:
                _retry_writable(fd, functools.partial(os.rmdir, top.name, dir_fd=fd))
                report.removed += 1
            except OSError as e:
                report._fail(top.rel, e)
    finally:
        os.close(fd)
    if not keep_root:
        try:
            os.rmdir(path)
            report.removed += 1
        except OSError as e:
            report._fail("", e)
