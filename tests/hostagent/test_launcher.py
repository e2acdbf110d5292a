"""launch_local: the runtime does not outlive the process that launched it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealroom.hostagent.simtee import pid_alive
from tests.runtime.test_enclave_e2e import Parties, make_manifest, parties, write_inputs

__all__ = ["parties"]
REPO = Path(__file__).resolve().parents[2]

LAUNCH = """
import sys, time
from pathlib import Path
from sealroom.hostagent.launcher import launch_local
enc = launch_local(Path(sys.argv[1]), tee="sim", home=Path(sys.argv[2]))
print(enc.process.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_runtime_ends_when_its_launcher_is_killed(tmp_path: Path, parties: Parties) -> None:
    manifest = make_manifest(tmp_path, parties, write_inputs(tmp_path), mid="orphan-local")
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(manifest), str(tmp_path / "home")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    try:
        assert launcher.stdout is not None
        runtime_pid = int(launcher.stdout.readline())
        assert pid_alive(runtime_pid)
    finally:
        launcher.kill()  # SIGKILL: no cleanup code runs in the launcher
        launcher.wait()
    for _ in range(400):
        if not pid_alive(runtime_pid):
            break
        time.sleep(0.05)
    assert not pid_alive(runtime_pid)
