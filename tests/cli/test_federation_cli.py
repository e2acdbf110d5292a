"""`sealroom federation demo`, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from sealroom.cli.main import app


def test_federation_demo_excludes_the_wrong_measurement() -> None:
    r = CliRunner().invoke(app, ["federation", "demo"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "SIMULATED" in out
    assert out.count("EXCLUDED") == 2  # hospital-a and hospital-b each exclude hospital-c
    assert "federation-policy" in out
    assert "round complete: 2 sites agree on" in out
    assert "no round for hospital-c" in out


def test_federation_demo_command_line() -> None:
    exe = Path(sys.executable).parent / "sealroom"
    r = subprocess.run(
        [str(exe), "federation", "demo"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert "round complete" in r.stdout
