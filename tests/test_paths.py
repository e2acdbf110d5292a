"""Paths (SEALROOM_HOME and what lives under it) are resolved in one module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sealroom import paths
from sealroom.cli.common import home_dir
from sealroom.client.controlplane import config_path
from sealroom.crypto.keys import keystore_dir
from sealroom.hostagent.backends.process import default_sim_authority

SRC = Path(__file__).resolve().parents[1] / "src" / "sealroom"
_RESOLVES_HOME = re.compile(r"SEALROOM_HOME\"|'SEALROOM_HOME'|Path\.home\(\)|expanduser\(")


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(SRC.rglob("*.py")) if p.name != "paths.py" or p.parent != SRC],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_no_module_but_paths_resolves_sealroom_home(path: Path) -> None:
    hits = [
        f"{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _RESOLVES_HOME.search(line)
    ]
    assert not hits, f"{path.relative_to(SRC)} resolves the home itself: {hits}"


def test_every_state_path_follows_sealroom_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALROOM_HOME", str(tmp_path / "h"))
    home = tmp_path / "h"
    assert paths.home() == home == home_dir()
    assert keystore_dir() == home / "keys"
    assert config_path() == home / "config.json"
    assert default_sim_authority() == paths.sim_authority() == home / "sim-authority"
    for f in (paths.verifier_dir, paths.collateral_cache, paths.stack_dir, paths.tpm2_state):
        assert f().parent == home


def test_default_home_is_the_xdg_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEALROOM_HOME", raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    assert paths.home() == Path("/home/someone/.local/share/sealroom")


def test_image_package_cache_follows_xdg_cache_home_not_the_image_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """image/build.py worked out $XDG_CACHE_HOME itself (the test above failed on it)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert paths.package_cache() == tmp_path / "c" / "sealroom" / "debs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert paths.package_cache() == Path.home() / ".cache" / "sealroom" / "debs"
