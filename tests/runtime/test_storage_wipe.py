"""Issue 9, defect 4: a deep result tree crashed the archiver ("maximum recursion
depth"), the storage wipe raised too, and ``inputs/`` stayed on disk in clear.

Archiving walks iteratively with a depth limit; the wipe is iterative, by descriptor,
and never raises; enclave storage is a private tmpfs where the runtime may mount one.
Whatever the algorithm does to its tree, nothing of the run remains after stop."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from sealroom.errors import InvalidInputError
from sealroom.files import wipe_tree
from sealroom.hostagent.launcher import launch_local
from sealroom.runtime.archive import MAX_TREE_DEPTH, archive_dir, safe_extract
from tests.runtime.test_enclave_e2e import (
    Parties,
    client,
    home,
    make_manifest,
    parties,
    run_to_end,
    write_inputs,
)

__all__ = ["home", "parties"]

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)


def _deep(root: Path, depth: int, name: str = "d") -> None:
    """``depth`` nested directories, made by descriptor (paths beyond PATH_MAX work)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_deep_result_tree_does_not_crash_archiver(tmp_path: Path) -> None:
    deep = tmp_path / "deep"
    deep.mkdir()
    _deep(deep, 2000)
    try:
        with pytest.raises(InvalidInputError) as e:
            archive_dir(deep, io.BytesIO())
        assert e.value.code == "results-too-deep"
    finally:
        wipe_tree(deep)  # pytest's own tmp_path cleanup recurses
    # A tree within the limit archives and round-trips.
    ok = tmp_path / "ok"
    ok.mkdir()
    _deep(ok, MAX_TREE_DEPTH - 1, "x")
    buf = io.BytesIO()
    archive_dir(ok, buf)
    (tmp_path / "ok.tar").write_bytes(buf.getvalue())
    out = safe_extract(tmp_path / "ok.tar", "tar", tmp_path / "out", max_total_bytes=1 << 20)
    assert len(out) == MAX_TREE_DEPTH - 1


def test_deep_archive_upload_refused_before_writing(tmp_path: Path) -> None:
    name = "/".join(["d"] * (MAX_TREE_DEPTH + 1)) + "/f"
    archive = tmp_path / "deep.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as t:
        ti = tarfile.TarInfo(name)
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"x"))
    with pytest.raises(InvalidInputError, match="nested"):
        safe_extract(archive, "tar", tmp_path / "dest", max_total_bytes=1 << 20)
    assert not (tmp_path / "dest").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["deep.tar"]


def test_wipe_removes_any_tree_and_never_raises(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not part of the run")
    root = tmp_path / "storage"
    root.mkdir()
    _deep(root, 2500)  # deeper than the recursion limit and than PATH_MAX allows by name
    flat = root / "flat"
    flat.mkdir()
    for i in range(20_000):
        (flat / f"f{i}").write_bytes(b"x")
    locked = root / "locked" / "inner"
    locked.mkdir(parents=True)
    (locked / "secret").write_text("s")
    os.chmod(locked, 0)
    os.chmod(root / "locked", 0)
    ro = root / "ro"
    ro.mkdir()
    (ro / "f").write_text("s")
    os.chmod(ro, 0o555)  # noqa: S103 - read-only, as an algorithm may leave it
    os.symlink(outside, root / "dir-link")
    os.symlink(outside / "keep.txt", root / "file-link")
    os.symlink("/nonexistent", root / "dangling")
    os.mkfifo(root / "fifo")
    report = wipe_tree(root)
    assert report.clean, report.left
    assert not root.exists()
    assert (outside / "keep.txt").read_text() == "not part of the run"  # links not followed
    # Nothing there, a file, and a failure it cannot fix: reported, never raised.
    assert wipe_tree(root).clean
    f = tmp_path / "file"
    f.write_text("x")
    assert wipe_tree(f).clean and not f.exists()


# The algorithm makes the worst tree it can: N levels deep, many files, directories it
# made unreadable or read-only, links out of /results, then it exits 0 or keeps running
# (with a tree the supervisor lets pass, so that the stop finds it still running).
MESS = b"""\
import os, sys, time
os.chdir('/results')
for i in range(int(sys.argv[1])):
    os.mkdir('d'); os.chdir('d')
open('bottom.txt', 'w').write(open('/inputs/a').read())
os.chdir('/results')
os.mkdir('many')
for i in range(4000):
    open('many/f%d' % i, 'w').write('x')
os.makedirs('locked/inner')
open('locked/inner/secret', 'w').write(open('/inputs/b').read())
os.chmod('locked/inner', 0); os.chmod('locked', 0)
os.mkdir('ro'); open('ro/f', 'w').write('x'); os.chmod('ro', 0o555)
os.symlink('/inputs/a', 'link-to-input')
os.symlink('/etc/passwd', 'link-out')
print('made the mess', flush=True)
if sys.argv[2:] == ['linger']:
    time.sleep(3600)
"""


def _host_view(base: Path) -> list[list[str]]:
    """What the host sees in each enclave's storage directory (its top level)."""
    return [sorted(p.name for p in d.iterdir()) for d in base.iterdir()]


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="the tmpfs needs root (CAP_SYS_ADMIN)")
@pytest.mark.parametrize(("storage", "linger"), [("tmpfs", False), ("disk", False), ("disk", True)])
def test_nothing_of_run_remains_on_disk_after_stop(
    tmp_path: Path, home: Path, parties: Parties, storage: str, linger: bool
) -> None:
    files = write_inputs(tmp_path, algorithm=MESS)
    manifest = make_manifest(tmp_path, parties, files, mid=f"mess-{storage}-{linger}", wall=120)
    doc = json.loads(manifest.read_text())
    doc["algorithm"]["args"] = ["100", "linger"] if linger else ["2000"]
    manifest.write_text(json.dumps(doc))
    base = tmp_path / "enclave-storage"
    enc = launch_local(manifest, tee="sim", home=home, workdir=base, storage=storage)
    try:
        assert enc.lines[0]["storage"]["kind"] == storage
        c = client(enc.url, manifest, home)
        if linger:
            c.attest()
            c.upload("algorithm", files / "main.py", parties.algo)
            c.upload("a", files / "a.txt", parties.dp1)
            c.upload("b", files / "b.txt", parties.dp2)
            deadline = time.monotonic() + 120  # a bound for a stuck run, not a speed check
            while not list(base.glob("*/results/link-out")):
                assert time.monotonic() < deadline, "the algorithm never made its tree"
                time.sleep(0.2)
        else:
            run_to_end(c, parties, files)
            receipt = c.verify_receipt(c.receipt())
            assert not receipt.ok
            assert receipt.payload["exit"]["reason"] == "result tree depth limit exceeded"
        if storage == "tmpfs":
            # The host's view of enclave storage: the empty mount point, never a file.
            assert _host_view(base) == [[]]
        else:  # on disk: inputs, the algorithm, the algorithm's tree, all visible
            assert {"inputs", "algorithm"} <= set(_host_view(base)[0])
    finally:
        enc.stop()
    assert list(base.iterdir()) == [], "enclave storage left behind"
    stopped = [ln for ln in enc.lines if ln.get("event") in ("stopped", "wipe_incomplete")]
    assert [ln["event"] for ln in stopped] == ["stopped"]
    if linger:
        states = [ln["state"] for ln in enc.lines if ln.get("event") == "state"]
        assert "failed" in states  # the cancelled run ended with a (failed) receipt
