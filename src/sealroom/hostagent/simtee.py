"""The sim TEE service for one enclave, as its own host process.

    python -m sealroom.hostagent.simtee --authority DIR --measurement HEX --host-data HEX
        --socket PATH [--watch-pid-file FILE] [--agent-alive FILE --orphan-timeout S]

The host agent starts one per sim enclave (the host plays the hardware: it fixes
MEASUREMENT and HOST_DATA). A separate process, so an agent restart does not take the
enclave's evidence source away; it exits on SIGTERM or when the runtime whose pid the
agent writes to ``--watch-pid-file`` is gone (or never appears within a minute).

Orphan watchdog: the agent touches ``--agent-alive`` every round. If that file is older
than ``--orphan-timeout`` seconds (the agent died and did not come back), this process
stops the runtime (SIGTERM, then SIGKILL: its storage is wiped on the way out) and exits,
so an enclave never outlives its agent for long.
Prints {"event": "ready"} once the socket exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.sim.service import SimTeeService
from sealroom.errors import SealroomError

PID_FILE_WAIT = 60.0


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def stop_runtime(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the orphaned runtime (if it still is one), SIGKILL after ``grace``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"sealroom.runtime" not in f.read():
                return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ProcessLookupError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sealroom-simtee")
    ap.add_argument("--authority", required=True, type=Path)
    ap.add_argument("--measurement", required=True)
    ap.add_argument("--host-data", required=True)
    ap.add_argument("--socket", required=True, type=Path)
    ap.add_argument("--watch-pid-file", type=Path, default=None)
    ap.add_argument("--agent-alive", type=Path, default=None)
    ap.add_argument("--orphan-timeout", type=float, default=0.0)
    args = ap.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        service = SimTeeService(
            SimAuthority.load_or_create(args.authority),
            measurement=bytes.fromhex(args.measurement),
            host_data=bytes.fromhex(args.host_data),
            socket_path=args.socket,
        )
        service.start()
    except (SealroomError, ValueError) as e:
        print(json.dumps({"event": "error", "message": str(e)}), flush=True)
        return 2
    print(json.dumps({"event": "ready", "socket": os.fspath(args.socket)}), flush=True)
    waited = 0.0
    try:
        while not stop.wait(0.5):
            if args.watch_pid_file is None:
                continue
            try:
                pid = int(args.watch_pid_file.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid == 0:
                waited += 0.5
                if waited > PID_FILE_WAIT:
                    break
            elif not pid_alive(pid):
                break
            elif args.agent_alive is not None and args.orphan_timeout > 0:
                try:
                    age = time.time() - args.agent_alive.stat().st_mtime
                except OSError:
                    age = 0.0  # not written yet
                if age > args.orphan_timeout:
                    stop_runtime(pid)
                    break
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
