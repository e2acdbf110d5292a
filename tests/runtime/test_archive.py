"""Safe extraction of hostile archives, and the deterministic directory tar.

Negative cases are named after the defect; each must be refused with the entry's name and
leave nothing at the destination.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealroom.errors import InvalidInputError
from sealroom.runtime.archive import archive_dir, safe_extract

MiB = 2**20


# ---- building archives -----------------------------------------------------------------


def _zip(path: Path, files: dict[str, bytes], *, mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.external_attr = mode << 16
            z.writestr(info, data)
    return path


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for ti, data in members:
            if data is not None:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)
    return path


def _ti(name: str, type_: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def _raw_zip(path: Path, name: str, deflated: bytes, crc: int, declared: int) -> Path:
    """A one-entry zip written by hand, so its headers can say whatever the test wants."""
    fname = name.encode()
    local = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(deflated), declared,
        len(fname), 0,
    )  # fmt: skip
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(deflated),
        declared, len(fname), 0, 0, 0, 0, 0o644 << 16, 0,
    )  # fmt: skip
    cd_offset = len(local) + len(fname) + len(deflated)
    cd = central + fname
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), cd_offset, 0)
    path.write_bytes(local + fname + deflated + cd + end)
    return path


def _zeros_deflated(mib: int) -> tuple[bytes, int]:
    """Raw deflate of ``mib`` MiB of zeros, built by repeating one fully-flushed block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * MiB) + c.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    one = b"\0" * MiB
    for _ in range(mib):
        crc = zlib.crc32(one, crc)
    return block * mib + final, crc


def _assert_clean(dest: Path) -> None:
    assert not dest.exists(), "a refused archive left something at the destination"
    leftovers = [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")]
    assert leftovers == [], leftovers


# ---- what a good archive gives ---------------------------------------------------------


def test_zip_extracts_files_and_dirs(tmp_path: Path) -> None:
    z = _zip(tmp_path / "a.zip", {"data/": b"", "data/x.csv": b"1,2\n", "README": b"hi"})
    dest = tmp_path / "out"
    paths = safe_extract(z, "zip", dest, max_total_bytes=1000)
    assert (dest / "data" / "x.csv").read_bytes() == b"1,2\n"
    assert (dest / "README").read_bytes() == b"hi"
    assert set(paths) == {dest / "data", dest / "data" / "x.csv", dest / "README"}
    assert stat.S_IMODE((dest / "README").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "data").stat().st_mode) == 0o755


def test_tar_and_targz_extract(tmp_path: Path) -> None:
    members = [(_ti("d", tarfile.DIRTYPE, mode=0o700), None), (_ti("d/f", mode=0o600), b"abc")]
    for name, compressed in (("a.tar", False), ("a.tar.gz", True)):
        p = tmp_path / name
        with tarfile.open(p, "w:gz") if compressed else tarfile.open(p, "w") as t:
            for ti, data in members:
                if data is None:
                    t.addfile(ti)
                else:
                    ti.size = len(data)
                    t.addfile(ti, io.BytesIO(data))
        dest = tmp_path / f"out-{name}"
        safe_extract(p, "tar", dest, max_total_bytes=100)
        assert (dest / "d" / "f").read_bytes() == b"abc"


def test_tar_of_dot_extracts(tmp_path: Path) -> None:
    """`tar -C dir .` names entries ./ and ./f: the root entry is implied, not refused."""
    t = _tar(
        tmp_path / "dot.tar",
        [(_ti("./", tarfile.DIRTYPE), None), (_ti("./sub", tarfile.DIRTYPE), None),
         (_ti("./sub/f"), b"x")],
    )  # fmt: skip
    dest = tmp_path / "deep" / "out"
    paths = safe_extract(t, "tar", dest, max_total_bytes=10)
    assert paths == [dest / "sub", dest / "sub" / "f"]
    assert (dest / "sub" / "f").read_bytes() == b"x"


def test_existing_empty_destination_is_used(tmp_path: Path) -> None:
    z = _zip(tmp_path / "a.zip", {"f": b"x"})
    dest = tmp_path / "out"
    dest.mkdir()
    safe_extract(z, "zip", dest, max_total_bytes=10)
    assert (dest / "f").read_bytes() == b"x"


def test_nonempty_destination_is_misuse(tmp_path: Path) -> None:
    z = _zip(tmp_path / "a.zip", {"f": b"x"})
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(ValueError, match="not an empty directory"):
        safe_extract(z, "zip", dest, max_total_bytes=10)
    assert (dest / "keep").read_text() == "mine"


def test_executable_bit_kept_setuid_dropped(tmp_path: Path) -> None:
    t = _tar(
        tmp_path / "a.tar",
        [
            (_ti("run.sh", mode=0o4755), b"#!/bin/sh\n"),
            (_ti("data", mode=0o666), b"d"),
            (_ti("sg", mode=0o2711), b"x"),
        ],
    )
    dest = tmp_path / "out"
    safe_extract(t, "tar", dest, max_total_bytes=100)
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "data").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "sg").stat().st_mode) == 0o755


def test_zip_executable_bit_from_unix_mode(tmp_path: Path) -> None:
    z = _zip(tmp_path / "a.zip", {"tool": b"x"}, mode=stat.S_IFREG | 0o6755)
    dest = tmp_path / "out"
    safe_extract(z, "zip", dest, max_total_bytes=10)
    assert stat.S_IMODE((dest / "tool").stat().st_mode) == 0o755


# ---- hostile archives ------------------------------------------------------------------

Builder = Callable[[Path], tuple[Path, str]]


def _zip_slip(tmp: Path) -> tuple[Path, str]:
    return _zip(tmp / "a.zip", {"ok.txt": b"x", "../evil": b"pwned"}), "zip"


def _zip_slip_nested(tmp: Path) -> tuple[Path, str]:
    return _zip(tmp / "a.zip", {"a/b/../../../evil": b"pwned"}), "zip"


def _zip_absolute(tmp: Path) -> tuple[Path, str]:
    return _zip(tmp / "a.zip", {"/etc/evil": b"pwned"}), "zip"


def _zip_backslash(tmp: Path) -> tuple[Path, str]:
    return _zip(tmp / "a.zip", {"..\\evil": b"pwned"}), "zip"


def _zip_symlink(tmp: Path) -> tuple[Path, str]:
    return _zip(tmp / "a.zip", {"link": b"/etc/passwd"}, mode=stat.S_IFLNK | 0o777), "zip"


def _zip_fifo(tmp: Path) -> tuple[Path, str]:
    return _zip(tmp / "a.zip", {"fifo": b""}, mode=stat.S_IFIFO | 0o644), "zip"


def _zip_duplicate(tmp: Path) -> tuple[Path, str]:
    p = tmp / "a.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("algorithm.py", b"print('mine')")
        with pytest.warns(UserWarning, match="Duplicate name"):
            z.writestr("algorithm.py", b"print('overwritten')")
    return p, "zip"


def _zip_duplicate_normalised(tmp: Path) -> tuple[Path, str]:
    return _zip(tmp / "a.zip", {"a/b": b"1", "a//./b": b"2"}), "zip"


def _zip_file_as_dir(tmp: Path) -> tuple[Path, str]:
    return _zip(tmp / "a.zip", {"a": b"file", "a/b": b"under a file"}), "zip"


def _zip_bomb(tmp: Path) -> tuple[Path, str]:
    data, crc = _zeros_deflated(1024)  # 1 GiB of zeros in about 1 MiB
    return _raw_zip(tmp / "bomb.zip", "zeros.bin", data, crc, 1024 * MiB), "zip"


def _zip_bomb_ratio(tmp: Path) -> tuple[Path, str]:
    data, crc = _zeros_deflated(8)
    return _raw_zip(tmp / "bomb.zip", "zeros.bin", data, crc, 8 * MiB), "zip"


def _zip_lying_size(tmp: Path) -> tuple[Path, str]:
    data, _ = _zeros_deflated(4)  # 4 MiB of data, header says 100 bytes
    return _raw_zip(tmp / "liar.zip", "small.txt", data, zlib.crc32(b"\0" * 100), 100), "zip"


def _zip_lying_size_larger(tmp: Path) -> tuple[Path, str]:
    data = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = data.compress(b"abc") + data.flush()
    return _raw_zip(tmp / "liar.zip", "f", raw, zlib.crc32(b"abc"), 300), "zip"


def _zip_bad_crc(tmp: Path) -> tuple[Path, str]:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = c.compress(b"abc") + c.flush()
    return _raw_zip(tmp / "crc.zip", "f", raw, zlib.crc32(b"abd"), 3), "zip"


def _zip_too_many(tmp: Path) -> tuple[Path, str]:
    return _zip(tmp / "a.zip", {f"f{i}": b"" for i in range(20)}), "zip"


def _zip_total_too_big(tmp: Path) -> tuple[Path, str]:
    return _zip(tmp / "a.zip", {"a": os.urandom(600), "b": os.urandom(600)}), "zip"


def _zip_encrypted(tmp: Path) -> tuple[Path, str]:
    p = _zip(tmp / "a.zip", {"secret": b"x"})
    b = bytearray(p.read_bytes())
    # Set the "encrypted" flag in the local and central headers.
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = b.index(sig) + off
        b[i] |= 1
    p.write_bytes(bytes(b))
    return p, "zip"


def _zip_truncated(tmp: Path) -> tuple[Path, str]:
    p = _zip(tmp / "a.zip", {"f": os.urandom(5000)})
    p.write_bytes(p.read_bytes()[:-30])
    return p, "zip"


def _tar_slip(tmp: Path) -> tuple[Path, str]:
    return _tar(tmp / "a.tar", [(_ti("../evil"), b"pwned")]), "tar"


def _tar_absolute(tmp: Path) -> tuple[Path, str]:
    return _tar(tmp / "a.tar", [(_ti("/etc/evil"), b"pwned")]), "tar"


def _tar_symlink_escaping(tmp: Path) -> tuple[Path, str]:
    # The classic two-step: a link pointing out, then a file written "through" it.
    return _tar(
        tmp / "a.tar",
        [(_ti("out", tarfile.SYMTYPE, linkname="../.."), None), (_ti("out/evil"), b"pwned")],
    ), "tar"


def _tar_symlink_inside(tmp: Path) -> tuple[Path, str]:
    return _tar(
        tmp / "a.tar", [(_ti("a"), b"x"), (_ti("b", tarfile.SYMTYPE, linkname="a"), None)]
    ), "tar"


def _tar_hardlink(tmp: Path) -> tuple[Path, str]:
    return _tar(tmp / "a.tar", [(_ti("h", tarfile.LNKTYPE, linkname="/etc/passwd"), None)]), "tar"


def _tar_device(tmp: Path) -> tuple[Path, str]:
    return _tar(tmp / "a.tar", [(_ti("sda", tarfile.BLKTYPE, devmajor=8, devminor=0), None)]), "tar"


def _tar_chardev(tmp: Path) -> tuple[Path, str]:
    return _tar(tmp / "a.tar", [(_ti("mem", tarfile.CHRTYPE, devmajor=1, devminor=1), None)]), "tar"


def _tar_fifo(tmp: Path) -> tuple[Path, str]:
    return _tar(tmp / "a.tar", [(_ti("p", tarfile.FIFOTYPE), None)]), "tar"


def _tar_duplicate(tmp: Path) -> tuple[Path, str]:
    return _tar(tmp / "a.tar", [(_ti("x"), b"1"), (_ti("./x"), b"2")]), "tar"


def _tar_too_many(tmp: Path) -> tuple[Path, str]:
    return _tar(tmp / "a.tar", [(_ti(f"f{i}"), b"") for i in range(20)]), "tar"


def _tar_total_too_big(tmp: Path) -> tuple[Path, str]:
    return _tar(tmp / "a.tar", [(_ti("a"), b"\0" * 700), (_ti("b"), b"\0" * 700)]), "tar"


def _tar_gz_bomb(tmp: Path) -> tuple[Path, str]:
    p = tmp / "bomb.tar.gz"
    with tarfile.open(p, "w:gz") as t:
        ti = _ti("zeros")
        ti.size = 64 * MiB
        t.addfile(ti, io.BytesIO(b"\0" * ti.size))
    return p, "tar"


def _tar_truncated(tmp: Path) -> tuple[Path, str]:
    p = _tar(tmp / "a.tar", [(_ti("f"), os.urandom(5000))])
    p.write_bytes(p.read_bytes()[:1500])
    return p, "tar"


def _tar_file_named_dot(tmp: Path) -> tuple[Path, str]:
    return _tar(tmp / "a.tar", [(_ti("."), b"x")]), "tar"


def _not_an_archive(tmp: Path) -> tuple[Path, str]:
    p = tmp / "x.zip"
    p.write_bytes(b"this is not a zip file at all")
    return p, "zip"


HOSTILE: dict[str, tuple[Builder, str]] = {
    "zip_slip": (_zip_slip, "'..' component"),
    "zip_slip_nested": (_zip_slip_nested, "'..' component"),
    "zip_absolute_path": (_zip_absolute, "absolute path"),
    "zip_backslash_path": (_zip_backslash, "backslash"),
    "zip_symlink": (_zip_symlink, "symbolic link"),
    "zip_fifo": (_zip_fifo, "special file"),
    "zip_duplicate_entry": (_zip_duplicate, "duplicate entry"),
    "zip_duplicate_after_normalising": (_zip_duplicate_normalised, "duplicate entry"),
    "zip_file_used_as_directory": (_zip_file_as_dir, "both a file and a directory"),
    "zip_bomb_1gib": (_zip_bomb, "zip bomb"),
    "zip_bomb_ratio": (_zip_bomb_ratio, "zip bomb"),
    "zip_header_understates_size": (_zip_lying_size, "more data than its declared 100"),
    "zip_header_overstates_size": (_zip_lying_size_larger, "holds 3 bytes, declared 300"),
    "zip_crc_mismatch": (_zip_bad_crc, "CRC-32"),
    "zip_too_many_entries": (_zip_too_many, "entries, the limit is 10"),
    "zip_total_size_over_limit": (_zip_total_too_big, "exceeds the limit of 1000"),
    "zip_encrypted_entry": (_zip_encrypted, "encrypted"),
    "zip_truncated": (_zip_truncated, "malformed"),
    "tar_slip": (_tar_slip, "'..' component"),
    "tar_absolute_path": (_tar_absolute, "absolute path"),
    "tar_symlink_escaping": (_tar_symlink_escaping, "symbolic link to '../..'"),
    "tar_symlink_inside": (_tar_symlink_inside, "symbolic link"),
    "tar_hardlink": (_tar_hardlink, "hard link to '/etc/passwd'"),
    "tar_block_device": (_tar_device, "device file"),
    "tar_char_device": (_tar_chardev, "device file"),
    "tar_fifo": (_tar_fifo, "FIFO"),
    "tar_duplicate_entry": (_tar_duplicate, "duplicate entry"),
    "tar_too_many_entries": (_tar_too_many, "more than 10 entries"),
    "tar_total_size_over_limit": (_tar_total_too_big, "exceeds the limit of 1000"),
    "tar_gz_bomb": (_tar_gz_bomb, "exceeds the limit of 1000"),
    "tar_truncated": (_tar_truncated, "malformed"),
    "tar_file_names_destination": (_tar_file_named_dot, "names the destination itself"),
    "not_an_archive": (_not_an_archive, "malformed"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_refused(case: str, tmp_path: Path) -> None:
    build, why = HOSTILE[case]
    src = tmp_path / "src"
    src.mkdir()
    archive, kind = build(src)
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(InvalidInputError) as ei:
        safe_extract(archive, kind, dest, max_total_bytes=1000, max_entries=10)  # type: ignore[arg-type]
    assert why in ei.value.message
    _assert_clean(dest)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "work" / "evil").exists()


def test_zip_bomb_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even with a generous limit, the 1 GiB bomb is refused by its ratio, not by writing."""
    archive, _ = _zip_bomb(tmp_path)
    written: list[int] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        written.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(InvalidInputError, match="zip bomb"):
        safe_extract(archive, "zip", tmp_path / "out", max_total_bytes=2 * 1024 * MiB)
    assert written == []


def test_lying_zip_writes_at_most_its_declared_size(tmp_path: Path) -> None:
    archive, _ = _zip_lying_size(tmp_path)
    with pytest.raises(InvalidInputError, match="more data than its declared"):
        safe_extract(archive, "zip", tmp_path / "out", max_total_bytes=10 * MiB)
    _assert_clean(tmp_path / "out")


def test_extraction_does_not_follow_existing_links(tmp_path: Path) -> None:
    """The work directory is fresh: a pre-planted link at dest cannot redirect writes."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    dest = tmp_path / "out"
    dest.symlink_to(target)
    z = _zip(tmp_path / "a.zip", {"f": b"x"})
    with pytest.raises(ValueError, match="not an empty directory"):
        safe_extract(z, "zip", dest, max_total_bytes=10)
    assert list(target.iterdir()) == []


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.lists(st.text(alphabet="ab./\\\0", min_size=1, max_size=12), max_size=6))
def test_any_names_extract_inside_or_are_refused(tmp_path: Path, names: list[str]) -> None:
    base = tmp_path / f"h{time.monotonic_ns()}"
    base.mkdir()
    p = base / "a.zip"
    with zipfile.ZipFile(p, "w") as z:
        for i, n in enumerate(names):
            z.writestr(zipfile.ZipInfo(n), f"{i}".encode())
    dest = base / "out"
    try:
        paths = safe_extract(p, "zip", dest, max_total_bytes=1000)
    except InvalidInputError:
        _assert_clean(dest)
    else:
        root = dest.resolve()
        for q in paths:
            assert q.resolve().is_relative_to(root)
    assert sorted(x.name for x in base.iterdir()) in (["a.zip"], ["a.zip", "out"])


# ---- archive_dir -----------------------------------------------------------------------


def _tree(root: Path, order: list[str]) -> None:
    root.mkdir()
    contents = {"b.txt": b"bee", "a/z.bin": b"\x00\x01", "a/y/deep.txt": b"deep", "c.sh": b"#!"}
    for name in order:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(contents[name])
    (root / "c.sh").chmod(0o750)
    (root / "b.txt").chmod(0o600)
    (root / "empty").mkdir()


def test_archive_dir_is_deterministic(tmp_path: Path) -> None:
    _tree(tmp_path / "one", ["b.txt", "a/z.bin", "a/y/deep.txt", "c.sh"])
    _tree(tmp_path / "two", ["c.sh", "a/y/deep.txt", "b.txt", "a/z.bin"])
    os.utime(tmp_path / "two" / "b.txt", (1_000_000, 1_000_000))
    os.chown(tmp_path / "two" / "b.txt", 1234, 5678)
    outs = []
    for name in ("one", "two", "one"):
        buf = io.BytesIO()
        archive_dir(tmp_path / name, buf)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1] == outs[2]
    with tarfile.open(fileobj=io.BytesIO(outs[0])) as t:
        members = t.getmembers()
        assert [m.name for m in members] == [
            "a", "a/y", "a/y/deep.txt", "a/z.bin", "b.txt", "c.sh", "empty",
        ]  # fmt: skip
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        modes = {m.name: m.mode for m in members}
        assert modes["c.sh"] == 0o755 and modes["b.txt"] == 0o644 and modes["a"] == 0o755
        f = t.extractfile("a/y/deep.txt")
        assert f is not None and f.read() == b"deep"


def test_archive_dir_round_trips_through_safe_extract(tmp_path: Path) -> None:
    _tree(tmp_path / "src", ["b.txt", "a/z.bin", "a/y/deep.txt", "c.sh"])
    tar = tmp_path / "r.tar"
    with tar.open("wb") as f:
        archive_dir(tmp_path / "src", f)
    dest = tmp_path / "dest"
    safe_extract(tar, "tar", dest, max_total_bytes=1000)
    assert (dest / "a" / "y" / "deep.txt").read_bytes() == b"deep"
    assert (dest / "empty").is_dir()
    assert stat.S_IMODE((dest / "c.sh").stat().st_mode) == 0o755


@pytest.mark.parametrize("kind", ["symlink_out", "fifo"])
def test_archive_dir_refuses_links_and_special_files(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "results"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    if kind == "symlink_out":
        (src / "passwd").symlink_to("/etc/passwd")
    else:
        os.mkfifo(src / "pipe")
    buf = io.BytesIO()
    with pytest.raises(InvalidInputError, match="only regular files and directories"):
        archive_dir(src, buf)
    assert b"root:" not in buf.getvalue()
