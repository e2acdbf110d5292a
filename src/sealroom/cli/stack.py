"""`sealroom up` / `sealroom down`: the whole system on one machine.

A control plane (SQLite in the data directory) and host agents (process backend, sim TEE)
as background processes bound to 127.0.0.1; their pids and URL in ``stack.json``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from sealroom.client.controlplane import ControlPlaneClient, save_config
from sealroom.errors import UnavailableError
from sealroom.files import write_private

START_TIMEOUT = 60.0


@dataclass
class Stack:
    data_dir: str
    url: str
    admin_key: str
    controlplane_pid: int
    agent_pids: list[int]
    # the key broker + attestation service (ADR 0024/0025); its admin key is kbs/admin.key
    kbs_url: str = ""
    kbs_pid: int = 0
    # the self-signed certificate of `up --tls` (the CLI's only trust anchor for url)
    ca_cert: str | None = None

    def save(self) -> None:
        path = Path(self.data_dir) / "stack.json"  # holds the admin key: private
        write_private(path, json.dumps(asdict(self)).encode(), overwrite=True, what="stack state")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(args: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # logs are private (0600): whatever a process prints stays with the operator
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter, sealroom's CLI
            [sys.executable, "-m", "sealroom.cli.main", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc.pid


def _wait(
    check: Callable[[], bool], what: str, log: Path, pid: int, timeout: float = START_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not _alive(pid):
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise UnavailableError(f"{what} did not come up (log {log}):\n{tail}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _choose_port(data_dir: Path, port: int | None) -> int:
    """--port if given; else the port this stack had before (kept in DATA_DIR/port, so
    its URL, the CLI's saved config and reconnecting agents stay right across `down` and
    `up`), if it is still free; else a free one."""
    if port:
        return port
    try:
        previous = int((data_dir / "port").read_text().strip())
    except (OSError, ValueError):
        previous = 0
    if 0 < previous < 65536 and _port_free(previous):
        return previous
    return _free_port()


def status(data_dir: Path) -> Stack | None:
    try:
        obj = json.loads((data_dir / "stack.json").read_text())
        stack = Stack(**obj)
    except (OSError, ValueError, TypeError):
        return None
    if not _alive(stack.controlplane_pid):
        return None
    return stack


def tls_fingerprint(stack: Stack) -> str | None:
    if not stack.ca_cert:
        return None
    from sealroom.controlplane.tls import fingerprint

    return fingerprint(Path(stack.ca_cert).read_bytes())


def up(
    data_dir: Path,
    *,
    port: int | None = None,
    agents: int = 1,
    tls: bool = False,
    enclave_listen: str | None = None,
    enclave_advertise: str | None = None,
) -> Stack:
    running = status(data_dir)
    if running is not None:
        return running
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs = data_dir / "logs"
    port = _choose_port(data_dir, port)
    (data_dir / "port").write_text(f"{port}\n")
    cert: Path | None = None
    tls_args: list[str] = []
    if tls:
        from sealroom.controlplane.tls import self_signed

        cert, key = self_signed(data_dir / "controlplane" / "tls")
        tls_args = ["--tls-cert", str(cert), "--tls-key", str(key)]
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    cp_log = logs / "controlplane.log"
    # the key broker's port is chosen first: the control plane names its attestation
    # service as verification_service (GET /api/v1/compute/attestation)
    kbs_port = _free_port()
    kbs_url = f"http://127.0.0.1:{kbs_port}"
    cp_pid = _spawn(
        [
            "controlplane",
            "serve",
            "--data-dir",
            str(data_dir / "controlplane"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *tls_args,
            "--attestation-service",
            kbs_url,
        ],
        cp_log,
    )
    client = ControlPlaneClient(url, ca_cert=cert)
    agent_pids: list[int] = []
    kbs_pid = 0
    try:
        _wait(client.healthy, "the control plane", cp_log, cp_pid)
        key_file = data_dir / "controlplane" / "bootstrap-admin-key"
        admin_key = os.environ.get("SEALROOM_ADMIN_KEY") or key_file.read_text().strip()
        client.api_key = admin_key
        for n in range(1, agents + 1):
            # the join token reaches the agent in a 0600 file, never in its argv (`ps`)
            agent_dir = data_dir / f"agent-{n}"
            agent_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            token_file = agent_dir / "join-token"
            write_private(
                token_file, client.join_token().encode(), overwrite=True, what="join token"
            )
            log = logs / f"agent-{n}.log"
            agent_pids.append(
                _spawn(
                    [
                        "agent",
                        "run",
                        "--control-plane",
                        url,
                        "--join-token-file",
                        str(token_file),
                        "--data-dir",
                        str(agent_dir),
                        "--name",
                        f"host-{n}",
                        *(["--ca-cert", str(cert)] if cert else []),
                        *(["--listen", enclave_listen] if enclave_listen else []),
                        *(["--advertise", enclave_advertise] if enclave_advertise else []),
                    ],
                    log,
                )
            )

            def online(want: int = n) -> bool:
                return sum(1 for h in client.hosts() if h.state == "online") >= want

            _wait(online, f"host agent {n}", log, agent_pids[-1])
            token_file.unlink(missing_ok=True)  # used: the agent has its credential now
        kbs_log = logs / "kbs.log"
        kbs_pid = _spawn(
            [
                "kbs",
                "serve",
                "--listen",
                f"127.0.0.1:{kbs_port}",
                "--data-dir",
                str(data_dir / "kbs"),
            ],
            kbs_log,
        )

        def kbs_healthy() -> bool:
            try:
                return httpx.get(f"{kbs_url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(kbs_healthy, "the key broker", kbs_log, kbs_pid)
    except BaseException:
        for pid in [*agent_pids, kbs_pid, cp_pid]:
            if pid:
                _terminate(pid)
        raise
    stack = Stack(
        str(data_dir),
        url,
        admin_key,
        cp_pid,
        agent_pids,
        kbs_url,
        kbs_pid,
        str(cert) if cert else None,
    )
    stack.save()
    save_config(url, admin_key, cert)
    return stack


def _terminate(pid: int, timeout: float = 20.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = 0 if _alive(pid) else pid
        if done or not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def down(data_dir: Path) -> bool:
    stack = status(data_dir)
    try:
        obj = json.loads((data_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return False
    for pid in [*obj.get("agent_pids", []), obj.get("kbs_pid", 0), obj.get("controlplane_pid", 0)]:
        if pid:
            _terminate(int(pid))
    (data_dir / "stack.json").unlink(missing_ok=True)
    return stack is not None
