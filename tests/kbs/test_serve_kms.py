"""`sealroom kbs serve` with the key manager: which KMS it serves, and the sim root it
trusts before any enclave ran on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sealroom import paths
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.cli.main import app
from sealroom.errors import InvalidInputError
from sealroom.kbs.serve import build, trusted_roots
from sealroom.kms import KeyManager
from sealroom.kms.broker import KmsBroker


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("SEALROOM_HOME", str(h))
    return h


def test_broker_started_before_any_enclave_trusts_the_local_sim_root(home: Path) -> None:
    """Defect: the local sim root was trusted only if it already existed, so a broker
    started before the machine's first enclave refused that enclave's evidence."""
    assert not paths.sim_authority().exists()
    roots = trusted_roots(())
    assert SimAuthority.load_or_create(paths.sim_authority()).root in roots


def test_build_with_kms_dir_serves_the_kms(home: Path, tmp_path: Path) -> None:
    KeyManager.init(tmp_path / "kms").create("ds", account="a", actor="t")
    dep = build(tmp_path / "kbs", kms_dir=tmp_path / "kms")
    guards = dep.app.state.guards
    assert len(guards) == 1 and isinstance(guards[0].__self__, KmsBroker)
    dep.store.close()


def test_serve_refuses_a_kms_dir_without_a_kms(home: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app, ["kbs", "serve", "--data-dir", str(tmp_path / "kbs"), "--kms-dir", str(tmp_path)]
    )
    assert isinstance(r.exception, InvalidInputError) and "no KMS there" in str(r.exception)
