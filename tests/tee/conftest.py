"""A real software TPM (swtpm) per test, on free 127.0.0.1 ports, terminated in teardown."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sealroom.hostagent.backends.vm import free_port_pair as _free_port_pair

TOOLS = ("tpm2_createek", "tpm2_createak", "tpm2_quote", "tpm2_pcrextend", "tpm2_evictcontrol")


@dataclass(frozen=True)
class Swtpm:
    port: int
    ctrl_port: int
    state: Path

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    for _ in range(200):
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (Debian: swtpm swtpm-tools; scripts/bootstrap.sh)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"tpm2-tools are not installed (missing {', '.join(missing)})")
    state = tmp_path / "swtpm-state"
    state.mkdir()
    log = tmp_path / "swtpm.log"
    for _ in range(5):  # a port taken between probing and binding: try another pair
        port, ctrl = _free_port_pair()
        with log.open("ab") as err:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [
                    "swtpm", "socket", "--tpm2",
                    "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                    "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
                    "--tpmstate", f"dir={state}",
                    "--flags", "startup-clear",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )  # fmt: skip
        if _wait_listening(proc, port):
            try:
                yield Swtpm(port, ctrl, state)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return
        proc.kill()
        proc.wait()
    raise RuntimeError(f"swtpm did not start: {log.read_text(errors='replace')[-300:]}")
