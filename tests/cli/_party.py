"""Helpers for the CLI tests that run a computation: the CLI as a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
