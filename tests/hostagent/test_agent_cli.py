"""`sealroom agent run` (and `python -m sealroom.hostagent run`): options, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sealroom.cli.agent_cmd import agent_app
from tests.hostagent.fakecp import TOKEN, FakeControlPlane

REPO = Path(__file__).resolve().parents[2]


def test_run_help_lists_the_contract_options() -> None:
    out = CliRunner().invoke(agent_app, ["run", "--help"], env={"COLUMNS": "200"}).output
    for opt in (
        "--control-plane",
        "--join-token-file",
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
                "--data-dir",
                str(tmp_path / "agent"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "SEALROOM_JOIN_TOKEN": "srj_wrong"},
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
    assert r.returncode != 0 and "--join-token-file" in r.stderr
    assert "SEALROOM_JOIN_TOKEN" in r.stderr


@pytest.mark.parametrize("entry", [["sealroom.cli.main", "agent"], ["sealroom.hostagent"]])
def test_join_token_not_in_argv(tmp_path: Path, entry: list[str]) -> None:
    """The token comes from a 0600 file (or the environment): the agent's command line,
    which `ps` shows to every user of the machine, never carries it, and the agent
    registers with it."""
    cp = FakeControlPlane().start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("SEALROOM_JOIN_TOKEN", None)
    cmd = [
        sys.executable,
        "-m",
        *entry,
        "run",
        "--control-plane",
        cp.url,
        "--join-token-file",
        str(token_file),
        "--data-dir",
        str(tmp_path / "agent"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if cp.token_used or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert cp.token_used, "the agent did not register with the token from the file"
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in argv
        assert b"--join-token-file" in argv
    finally:
        proc.terminate()
        proc.wait(30)
        cp.stop()
    # the option that put the token in argv is gone
    r = CliRunner().invoke(agent_app, ["run", "--join-token", TOKEN], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "No such option" in r.output
