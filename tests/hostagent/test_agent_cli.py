"""`sealroom agent run` (and `python -m sealroom.hostagent run`): options, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sealroom.cli.agent_cmd import agent_app
from tests.hostagent.fakecp import FakeControlPlane

REPO = Path(__file__).resolve().parents[2]


def test_run_help_lists_the_contract_options() -> None:
    out = CliRunner().invoke(agent_app, ["run", "--help"], env={"COLUMNS": "200"}).output
    for opt in (
        "--control-plane",
        "--join-token",
        "--data-dir",
        "--name",
        "--reserve-cpus",
        "--reserve-memory-mb",
        "--heartbeat",
    ):
        assert opt in out


@pytest.mark.parametrize("entry", [["sealroom.cli.main", "agent"], ["sealroom.hostagent"]])
def test_refused_join_token_is_a_clear_error_not_a_retry_loop(
    tmp_path: Path, entry: list[str]
) -> None:
    cp = FakeControlPlane().start()
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                *entry,
                "run",
                "--control-plane",
                cp.url,
                "--join-token",
                "srj_wrong",
                "--data-dir",
                str(tmp_path / "agent"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )
    finally:
        cp.stop()
    assert r.returncode != 0
    assert "join token invalid" in r.stderr
    assert not (tmp_path / "agent" / "agent.json").exists()


def test_no_credential_and_no_token_is_a_clear_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealroom.hostagent",
            "run",
            "--control-plane",
            "http://127.0.0.1:9",
            "--data-dir",
            str(tmp_path / "agent"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert r.returncode != 0 and "--join-token" in r.stderr
