"""Helpers for the CLI tests that run a computation: the CLI as a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealroom.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def runner(env: dict[str, str], cwd: Path) -> Callable[..., str]:
    """``run(*args, rc=0)``: the CLI in ``cwd``; asserts its exit code, returns its output."""

    def run(*args: str, rc: int = 0) -> str:
        r = cli(*args, env=env, cwd=cwd)
        assert r.returncode == rc, (args, r.stdout, r.stderr)
        return r.stdout + r.stderr

    return run


def upload_all(url: str, *, env: dict[str, str], cwd: Path) -> None:
    """The workspace's three uploads, each by its own party, through `sealroom upload`."""
    for path, slot, key in (
        ("main.py", "algorithm", "lab"),
        ("a.txt", "clinic-a", "clinic-a"),
        ("b.txt", "clinic-b", "clinic-b"),
    ):
        r = cli(
            "upload",
            url,
            path,
            "--manifest",
            "manifest.json",
            "--slot",
            slot,
            "--key",
            key,
            env=env,
            cwd=cwd,
        )
        assert r.returncode == 0, r.stdout + r.stderr


FAILING = """\
import pathlib, sys
print('clinic-a holds ' + pathlib.Path('/inputs/clinic-a').read_text(), flush=True)
print('giving up: no such module', file=sys.stderr, flush=True)
import numpy_that_is_not_there
"""


def failing_workspace(w: Path, env: dict[str, str]) -> Path:
    """The workspace with an algorithm that prints, then fails (a missing module), and a
    manifest that names the algorithm provider ("lab") as a reader of the run log."""
    (w / "main.py").write_text(FAILING)
    r = cli(
        "manifest", "init", "--algorithm-key", "lab", "--algorithm", "main.py",
        "--dataset", "clinic-a:clinic-a:a.txt", "--dataset", "clinic-b:clinic-b:b.txt",
        "--consumer", "analyst", "--log-reader", "lab", "--tee", "sim",
        "--out", "manifest.json", "--force",
        env=env, cwd=w,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return w
