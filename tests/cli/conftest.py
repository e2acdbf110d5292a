"""Fixtures for CLI tests that run computations: a key store and a manifest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ._party import cli


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SEALROOM_HOME": str(tmp_path / "home"), "COLUMNS": "200"}


@pytest.fixture
def workspace(tmp_path: Path, env: dict[str, str]) -> Path:
    w = tmp_path / "w"
    w.mkdir()
    (w / "main.py").write_text(
        "import pathlib\n"
        "a = int(pathlib.Path('/inputs/clinic-a').read_text())\n"
        "b = int(pathlib.Path('/inputs/clinic-b').read_text())\n"
        "pathlib.Path('/results/sum.txt').write_text(str(a + b))\n"
    )
    (w / "a.txt").write_text("40")
    (w / "b.txt").write_text("2")
    for name in ("lab", "clinic-a", "clinic-b", "analyst", "mallory"):
        r = cli("keys", "new", name, env=env, cwd=w)
        assert r.returncode == 0, r.stderr
    r = cli(
        "manifest",
        "init",
        "--algorithm-key",
        "lab",
        "--algorithm",
        "main.py",
        "--dataset",
        "clinic-a:clinic-a:a.txt",
        "--dataset",
        "clinic-b:clinic-b:b.txt",
        "--consumer",
        "analyst",
        "--tee",
        "sim",
        "--out",
        "manifest.json",
        env=env,
        cwd=w,
    )
    assert r.returncode == 0, r.stderr
    return w
