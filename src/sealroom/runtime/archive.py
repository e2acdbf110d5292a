"""Safe extraction of uploaded zip/tar archives, and deterministic tar of a directory.

``safe_extract`` treats the archive as hostile (docs/adr/0010-sandbox.md):

1. *Inspect* every entry before writing anything: the name (no absolute path, no ``..``,
   no backslash, NUL or empty component), the type (regular files and directories only:
   links of any kind, devices, FIFOs are refused), duplicates (also a file that is used
   as a directory), the entry count, the declared total size, encryption and, for zip,
   the compression ratio of large entries.
2. *Extract* into a fresh hidden sibling directory, counting the bytes actually written
   (a lying size header cannot make it write more than declared or than the limit),
   with modes normalised (0644/0755 for files, 0755 for directories, never set-id).
3. *Publish* by renaming it to ``dest``. On any refusal the partial tree is removed:
   ``dest`` never holds a half-extracted archive.

``archive_dir`` writes a deterministic tar of a directory (sorted names, mtime 0, uid/gid
0, no user names, normalised modes): the same tree gives the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from sealroom.errors import InvalidInputError
from sealroom.files import wipe_tree

ArchiveKind = Literal["zip", "tar"]

CHUNK = 1 << 20
# A zip entry larger than this must not claim more than MAX_RATIO times its compressed
# size (small entries may compress better: text of one repeated byte, for instance).
RATIO_MIN_BYTES = 1 << 20
MAX_RATIO = 200
MAX_NAME_BYTES = 4096
MAX_COMPONENT_BYTES = 255
# Trees (extracted archives, an algorithm's results) are at most this deep: far below
# Python's recursion limit, which os.walk, shutil.rmtree and tempfile cleanup still hit.
MAX_TREE_DEPTH = 128


@dataclass(frozen=True)
class _Entry:
    name: str  # as in the archive, for messages
    parts: tuple[str, ...]  # normalised relative path
    is_dir: bool
    size: int  # declared uncompressed size (0 for directories)
    executable: bool
    chunks: Callable[[], Iterator[bytes]] | None  # file data, for regular files


def _refuse(name: str, why: str) -> InvalidInputError:
    return InvalidInputError(f"archive entry {name!r}: {why}", code="unsafe-archive")


def _normalise(name: str, *, is_dir: bool) -> tuple[str, ...]:
    """The entry's path as components; () only for a directory naming the root ("./")."""
    if not name:
        raise _refuse(name, "empty name")
    if "\0" in name:
        raise _refuse(name, "NUL character in name")
    if "\\" in name:
        raise _refuse(name, "backslash in name (not a POSIX path)")
    if name.startswith("/"):
        raise _refuse(name, "absolute path")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise _refuse(name, f"name longer than {MAX_NAME_BYTES} bytes")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(name, "'..' component (path escapes the destination)")
    if not parts and not is_dir:
        raise _refuse(name, "names the destination itself")
    if len(parts) > MAX_TREE_DEPTH:
        raise _refuse(name, f"nested {len(parts)} deep, at most {MAX_TREE_DEPTH}")
    for p in parts:
        if len(p.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
            raise _refuse(name, f"path component longer than {MAX_COMPONENT_BYTES} bytes")
    return parts


def _zip_entries(zf: zipfile.ZipFile, max_entries: int) -> Iterator[_Entry]:
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise InvalidInputError(
            f"archive has {len(infos)} entries, the limit is {max_entries}",
            code="unsafe-archive",
        )
    for info in infos:
        name = info.filename
        if "\0" in info.orig_filename:
            raise _refuse(info.orig_filename, "NUL character in name")
        is_dir = name.endswith("/")  # ZipInfo.is_dir() fails on an empty name
        parts = _normalise(name, is_dir=is_dir)
        mode = info.external_attr >> 16
        fmt = stat.S_IFMT(mode)
        if info.flag_bits & 0x1:
            raise _refuse(name, "encrypted entry")
        if fmt == stat.S_IFLNK:
            raise _refuse(name, "symbolic link (links are not extracted)")
        if is_dir:
            if fmt not in (0, stat.S_IFDIR):
                raise _refuse(name, "special file")
            if parts:  # "./" (the destination itself) is implied
                yield _Entry(name, parts, True, 0, False, None)
            continue
        if fmt not in (0, stat.S_IFREG):
            raise _refuse(name, "special file (device, FIFO or socket)")
        if info.file_size >= RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(
            info.compress_size, 1
        ):
            raise _refuse(
                name,
                f"compression ratio {info.file_size // max(info.compress_size, 1)}:1 "
                f"exceeds {MAX_RATIO}:1 (zip bomb)",
            )
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refuse(name, f"compression method {info.compress_type} is not supported")
        yield _Entry(
            name,
            parts,
            False,
            info.file_size,
            bool(mode & 0o100),
            lambda info=info: _zip_chunks(zf, info),  # type: ignore[misc]
        )


def _zip_chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """Inflate one entry ourselves, so a header that lies is caught, not trusted.

    zipfile would silently stop at the declared size; here the data must inflate to
    exactly the declared size, end exactly where the compressed data ends, and match the
    declared CRC-32. Output is produced in bounded pieces (never a whole entry in memory).
    """
    raw = zipfile.ZipInfo(info.orig_filename, info.date_time)
    raw.header_offset = info.header_offset
    raw.flag_bits = info.flag_bits
    raw.compress_type = zipfile.ZIP_STORED
    raw.compress_size = raw.file_size = info.compress_size
    # raw has no CRC attribute, so zipfile does not check one over the compressed bytes.
    name = info.filename
    produced = 0
    crc = 0
    d = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    with zf.open(raw) as src:
        while chunk := src.read(CHUNK):
            if d is None:
                pieces = [chunk]
            else:
                if d.eof:
                    raise _refuse(name, "data continues after the end of the deflate stream")
                pieces = []
                buf = chunk
                while buf and not d.eof:
                    pieces.append(d.decompress(buf, CHUNK))
                    buf = d.unconsumed_tail
                if d.unused_data or buf:
                    raise _refuse(name, "data continues after the end of the deflate stream")
            for out in pieces:
                produced += len(out)
                if produced > info.file_size:
                    raise _refuse(name, f"holds more data than its declared {info.file_size} bytes")
                crc = zlib.crc32(out, crc)
                yield out
    if d is not None and not d.eof:
        raise _refuse(name, "deflate stream is truncated")
    if produced != info.file_size:
        raise _refuse(name, f"holds {produced} bytes, declared {info.file_size}")
    if crc != info.CRC:
        raise _refuse(name, "CRC-32 does not match the data")


def _tar_entries(tf: tarfile.TarFile, max_entries: int) -> Iterator[_Entry]:
    members: list[tarfile.TarInfo] = []
    while True:
        ti = tf.next()
        if ti is None:
            break
        members.append(ti)
        if len(members) > max_entries:
            raise InvalidInputError(
                f"archive has more than {max_entries} entries", code="unsafe-archive"
            )
    for ti in members:
        name = ti.name
        parts = _normalise(name, is_dir=ti.isdir())
        if ti.issym():
            raise _refuse(name, f"symbolic link to {ti.linkname!r} (links are not extracted)")
        if ti.islnk():
            raise _refuse(name, f"hard link to {ti.linkname!r} (links are not extracted)")
        if ti.ischr() or ti.isblk():
            raise _refuse(name, "device file")
        if ti.isfifo():
            raise _refuse(name, "FIFO")
        if ti.isdir():
            if parts:  # "./" (the destination itself, as `tar -C dir .` writes) is implied
                yield _Entry(name, parts, True, 0, False, None)
            continue
        if not ti.isreg():
            raise _refuse(name, f"unsupported entry type {ti.type!r}")
        yield _Entry(
            name,
            parts,
            False,
            ti.size,
            bool(ti.mode & 0o100),
            lambda ti=ti: _tar_chunks(tf, ti),  # type: ignore[misc]
        )


def _tar_chunks(tf: tarfile.TarFile, ti: tarfile.TarInfo) -> Iterator[bytes]:
    f = tf.extractfile(ti)
    if f is None:  # pragma: no cover - regular files always have data
        raise _refuse(ti.name, "no data")
    with f:
        while chunk := f.read(CHUNK):
            yield chunk


def _check(entries: list[_Entry], max_total_bytes: int) -> None:
    """Duplicates, file/directory clashes and the declared total, before any write."""
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    total = 0
    for e in entries:
        if e.parts in files or (not e.is_dir and e.parts in dirs):
            raise _refuse(e.name, "duplicate entry")
        for i in range(1, len(e.parts)):
            if e.parts[:i] in files:
                raise _refuse(e.name, f"{'/'.join(e.parts[:i])!r} is both a file and a directory")
        if e.is_dir:
            dirs.add(e.parts)
        else:
            files.add(e.parts)
            total += e.size
            if total > max_total_bytes:
                raise _refuse(
                    e.name,
                    f"total uncompressed size exceeds the limit of {max_total_bytes} bytes",
                )
        for i in range(1, len(e.parts)):
            dirs.add(e.parts[:i])
    for d in dirs:
        if d in files:
            raise _refuse("/".join(d), "is both a file and a directory")


def _write(root: Path, entries: list[_Entry], max_total_bytes: int) -> list[Path]:
    written = 0
    out: list[Path] = []
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for e in entries:
            parent_fd = _makedirs(root_fd, e.parts if e.is_dir else e.parts[:-1])
            try:
                if e.is_dir:
                    out.append(root.joinpath(*e.parts))
                    continue
                assert e.chunks is not None
                fd = os.open(
                    e.parts[-1],
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=parent_fd,
                )
                try:
                    this = 0
                    for chunk in e.chunks():
                        this += len(chunk)
                        written += len(chunk)
                        if this > e.size:
                            raise _refuse(e.name, f"holds more data than its declared {e.size}")
                        if written > max_total_bytes:
                            raise _refuse(
                                e.name,
                                f"total uncompressed size exceeds the limit of "
                                f"{max_total_bytes} bytes",
                            )
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                    if this != e.size:
                        raise _refuse(e.name, f"holds {this} bytes, declared {e.size}")
                    os.fchmod(fd, 0o755 if e.executable else 0o644)
                finally:
                    os.close(fd)
                out.append(root.joinpath(*e.parts))
            finally:
                if parent_fd != root_fd:
                    os.close(parent_fd)
    finally:
        os.close(root_fd)
    return out


def _makedirs(root_fd: int, parts: tuple[str, ...]) -> int:
    """Open (creating) the directory ``parts`` under ``root_fd`` without following links."""
    fd = root_fd
    for p in parts:
        created = True
        try:
            os.mkdir(p, 0o755, dir_fd=fd)
        except FileExistsError:
            created = False
        nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        if created:
            os.fchmod(nfd, 0o755)  # whatever the umask
        if fd != root_fd:
            os.close(fd)
        fd = nfd
    return fd


def safe_extract(
    archive: Path,
    kind: ArchiveKind,
    dest: Path,
    *,
    max_total_bytes: int,
    max_entries: int = 10000,
) -> list[Path]:
    """Extract ``archive`` into ``dest`` (which must not exist, or be an empty directory).

    Returns the extracted paths (files and directories) in archive order. Raises
    InvalidInputError naming the entry and the reason on anything unsafe; then nothing
    is left at ``dest`` (an empty ``dest`` that existed before is removed as well).
    """
    if kind not in ("zip", "tar"):
        raise ValueError(f"unknown archive kind {kind!r}")
    if max_total_bytes < 0 or max_entries < 0:
        raise ValueError("limits must be non-negative")
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise ValueError(f"destination {dest} exists and is not an empty directory")
    if dest.exists():
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.extract-{secrets.token_hex(6)}"
    work.mkdir(mode=0o700)
    try:
        with contextlib.ExitStack() as stack:
            if kind == "zip":
                zf = stack.enter_context(zipfile.ZipFile(archive))
                entries = list(_zip_entries(zf, max_entries))
            else:
                tf = stack.enter_context(tarfile.open(archive, mode="r:*"))
                entries = list(_tar_entries(tf, max_entries))
            _check(entries, max_total_bytes)
            rel = _write(work, entries, max_total_bytes)
        work.chmod(0o755)
        os.rename(work, dest)
    except InvalidInputError:
        wipe_tree(work)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error,
            NotImplementedError, UnicodeError) as e:  # fmt: skip
        wipe_tree(work)
        raise InvalidInputError(
            f"{kind} archive {archive.name!r} is malformed: {e}", code="malformed-archive"
        ) from e
    except OSError as e:
        wipe_tree(work)
        raise InvalidInputError(
            f"{kind} archive {archive.name!r} could not be extracted: {e.strerror or e}",
            code="malformed-archive",
        ) from e
    except BaseException:
        wipe_tree(work)
        raise
    return [dest / p.relative_to(work) for p in rel]


# ---- deterministic tar -------------------------------------------------------------------


def _entries(path: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(path) as it:
        items = sorted(it, key=lambda e: e.name.encode("utf-8", "surrogateescape"))
    return iter(items)


def _walk(root: Path) -> Iterator[tuple[PurePosixPath, Path, os.stat_result]]:
    """Pre-order, names sorted bytewise, without recursion (an algorithm can nest
    directories deeper than Python's recursion limit), at most MAX_TREE_DEPTH deep."""
    stack = [(_entries(root), PurePosixPath())]
    while stack:
        it, rel = stack[-1]
        e = next(it, None)
        if e is None:
            stack.pop()
            continue
        st = e.stat(follow_symlinks=False)
        r = rel / e.name
        yield r, Path(e.path), st
        if stat.S_ISDIR(st.st_mode):
            if len(stack) >= MAX_TREE_DEPTH:
                raise InvalidInputError(
                    f"{str(r)[:200]}...: the tree is nested deeper than {MAX_TREE_DEPTH} "
                    "directories",
                    code="results-too-deep",
                )
            stack.append((_entries(Path(e.path)), r))


def archive_dir(src: Path, dst: BinaryIO) -> None:
    """Write a deterministic tar of the tree under ``src`` (not including ``src`` itself).

    Names are sorted (bytewise, depth-first), mtime is 0, uid/gid 0 with no user or group
    names, modes are 0755 for directories and executable files, 0644 otherwise. Symbolic
    links, devices, FIFOs and sockets are refused (InvalidInputError): a link written by an
    algorithm must never make the archive read a file outside ``src``.
    """
    if not src.is_dir() or src.is_symlink():
        raise InvalidInputError(f"{src} is not a directory")
    try:
        _archive(src, dst)
    except OSError as e:  # e.g. a directory the algorithm made unreadable, a long path
        raise InvalidInputError(
            f"{e.filename or src}: cannot be archived: {e.strerror or e}",
            code="results-unreadable",
        ) from e


def _archive(src: Path, dst: BinaryIO) -> None:
    with tarfile.open(fileobj=dst, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for rel, path, st in _walk(src):
            ti = tarfile.TarInfo(str(rel))
            ti.mtime = 0
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            if stat.S_ISDIR(st.st_mode):
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            elif stat.S_ISREG(st.st_mode):
                ti.type = tarfile.REGTYPE
                ti.mode = 0o755 if st.st_mode & 0o100 else 0o644
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    fst = os.fstat(f.fileno())
                    if not stat.S_ISREG(fst.st_mode):
                        raise InvalidInputError(f"{rel} changed while being archived")
                    ti.size = fst.st_size
                    tf.addfile(ti, f)
            else:
                what = "symbolic link" if stat.S_ISLNK(st.st_mode) else "special file"
                raise InvalidInputError(
                    f"{rel} is a {what}; only regular files and directories are archived",
                    code="unsafe-archive",
                )
