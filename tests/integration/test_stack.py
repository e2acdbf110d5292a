"""The whole system on one machine: control plane + host agents as real processes on
127.0.0.1, SQLite, the sim TEE, real enclaves; driven through the clients the CLI uses."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealroom.attestation.sim.authority import SimAuthority
from sealroom.cli import stack as stack_mod
from sealroom.client.controlplane import ControlPlaneClient
from sealroom.client.enclave import EnclaveClient
from sealroom.crypto.keys import PartyKeys
from sealroom.errors import AccessDeniedError, CapacityError, ConflictError, NotFoundError
from sealroom.hostagent.launcher import runtime_measurement
from sealroom.hostagent.simtee import pid_alive
from sealroom.hostagent.state import AgentStore
from sealroom.manifest import Manifest

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)

ALGORITHM = b"""\
import pathlib
a = int(pathlib.Path('/inputs/a').read_text())
b = int(pathlib.Path('/inputs/b').read_text())
pathlib.Path('/results/answer.txt').write_text(str(a + b))
"""


class Parties:
    def __init__(self) -> None:
        self.algo, self.dp1, self.dp2, self.alice, self.mallory = (
            PartyKeys.generate(n) for n in ("algo", "dp1", "dp2", "alice", "mallory")
        )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("SEALROOM_HOME", str(h))
    monkeypatch.setenv("SEALROOM_AGENT_TIMEOUT", "6")
    return h


@pytest.fixture
def stack(home: Path, request: pytest.FixtureRequest) -> Iterator[stack_mod.Stack]:
    agents = getattr(request, "param", 2)
    s = stack_mod.up(home / "stack", agents=agents)
    yield s
    stack_mod.down(home / "stack")


def manifest_doc(p: Parties, tmp: Path, mid: str, vcpus: int = 1) -> dict[str, Any]:
    files = {"main.py": ALGORITHM, "a": b"40", "b": b"2"}
    for name, data in files.items():
        (tmp / name).write_bytes(data)

    def h(name: str) -> str:
        return hashlib.sha256(files[name]).hexdigest()

    return {
        "version": 1,
        "id": mid,
        "name": f"sum {mid}",
        "algorithm": {
            "kind": "python",
            "sha256": h("main.py"),
            "provider": p.algo.public.to_json_obj(),
            "entrypoint": "main.py",
            "args": [],
        },
        "datasets": [
            {"name": "a", "sha256": h("a"), "provider": p.dp1.public.to_json_obj(), "max_size": 64},
            {"name": "b", "sha256": h("b"), "provider": p.dp2.public.to_json_obj(), "max_size": 64},
        ],
        "consumers": [p.alice.public.to_json_obj()],
        "policy": {
            "version": 1,
            "allow_simulated": True,
            "require": ["snp"],
            "snp": {
                "measurements": [runtime_measurement().hex()],
                "report_data": {"mode": "sealroom-v1"},
            },
        },
        "limits": {
            "vcpus": vcpus,
            "memory_mb": 256,
            "wall_seconds": 30,
            "max_result_bytes": 1 << 20,
        },
    }


def run_parties(
    cp: ControlPlaneClient, comp_id: str, doc: dict[str, Any], p: Parties, tmp: Path, home: Path
) -> None:
    comp = cp.wait_for(comp_id, ("awaiting_inputs",), 90)
    assert comp.state == "awaiting_inputs", comp
    upload_inputs(comp.enclave_url or "", doc, p, tmp, home)


def wait_destroyed(cp: ControlPlaneClient, cid: str) -> None:
    """Until the host confirmed the enclave gone (wait_for stops at any final state)."""
    for _ in range(300):
        if cp.computation(cid).state == "destroyed":
            return
        time.sleep(0.2)
    raise AssertionError(f"{cid} is still {cp.computation(cid).state.value}, not destroyed")


def upload_inputs(url: str, doc: dict[str, Any], p: Parties, tmp: Path, home: Path) -> None:
    """Each party attests the enclave and uploads its input (no control plane needed)."""
    root = SimAuthority.load_or_create(home / "sim-authority").root
    enclave = EnclaveClient(url, Manifest.from_dict(doc), extra_roots=(root,))
    assert enclave.attest().simulated
    enclave.upload("algorithm", tmp / "main.py", p.algo)
    enclave.upload("a", tmp / "a", p.dp1)
    enclave.upload("b", tmp / "b", p.dp2)


def test_full_flow_two_hosts(stack: stack_mod.Stack, home: Path, tmp_path: Path) -> None:
    cp = ControlPlaneClient(stack.url, stack.admin_key)
    hosts = cp.hosts()
    assert len(hosts) == 2 and all(h.state == "online" for h in hosts)
    p = Parties()
    # a separate user account owns the computation
    user = cp.create_account("org-a")
    key = cp.create_key(user.id).key
    owner = ControlPlaneClient(stack.url, key)
    docs = [manifest_doc(p, tmp_path, f"flow-{n}") for n in range(2)]
    comps = [owner.create_computation(d) for d in docs]
    # spread: two computations land on two different hosts
    assert {c.host_id for c in comps} == {h.id for h in hosts}
    for c, d in zip(comps, docs, strict=True):
        run_parties(owner, c.id, d, p, tmp_path, home)
    for c, d in zip(comps, docs, strict=True):
        done = owner.wait_for(c.id, ("completed", "destroyed"), 120)
        assert done.state in ("completed", "destroyed"), done
        # blobs arrive once the agent handed them over
        out = tmp_path / f"out-{c.id}"
        for _ in range(100):
            try:
                receipt = owner.fetch_result(
                    c.id,
                    Manifest.from_dict(d),
                    p.alice,
                    out,
                    extra_roots=(SimAuthority.load_or_create(home / "sim-authority").root,),
                )
                break
            except Exception:
                time.sleep(0.3)
        else:
            raise AssertionError("result never became available")
        assert (out / "answer.txt").read_text() == "42"
        assert receipt.ok and receipt.simulated
        with pytest.raises(AccessDeniedError):
            owner.fetch_result(c.id, Manifest.from_dict(d), p.mallory, tmp_path / "stolen")
    # another account sees nothing of org-a's
    other = ControlPlaneClient(stack.url, cp.create_key(cp.create_account("org-b").id).key)
    assert other.computations() == []
    with pytest.raises(NotFoundError):
        other.computation(comps[0].id)
    states = [e.state for e in owner.events(comps[0].id)]
    for s in ("scheduled", "launching", "awaiting_inputs", "running", "completed"):
        assert s in states, states


@pytest.mark.parametrize("stack", [1], indirect=True)
def test_exhaustion_is_rejected_and_capacity_freed(stack: stack_mod.Stack, tmp_path: Path) -> None:
    cp = ControlPlaneClient(stack.url, stack.admin_key)
    host = cp.hosts()[0]
    cpus = int(host.resources.cpu_total)
    p = Parties()
    made = [cp.create_computation(manifest_doc(p, tmp_path, f"cap-{n}")) for n in range(cpus)]
    with pytest.raises(CapacityError) as e:
        cp.create_computation(manifest_doc(p, tmp_path, "one-too-many"))
    assert e.value.exit_code == 3 and "vCPU" in e.value.message
    assert int(cp.hosts()[0].resources.cpu_used) <= cpus  # never overcommitted
    cp.cancel(made[0].id)
    # freed once the agent stopped the enclave (until then it may still run)
    wait_destroyed(cp, made[0].id)
    again = cp.create_computation(manifest_doc(p, tmp_path, "after-cancel"))
    assert again.host_id == host.id


def spawn_cli(home: Path, log_name: str, *args: str) -> subprocess.Popen[bytes]:
    """A `sealroom ...` process in its own session, output to the stack's logs."""
    with (home / "stack" / "logs" / log_name).open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sealroom.cli.main", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def restart_controlplane(
    stack: stack_mod.Stack, home: Path, cp: ControlPlaneClient
) -> subprocess.Popen[bytes]:
    """`sealroom controlplane serve` again on the stack's port and data (after kill -9)."""
    port = stack.url.rsplit(":", 1)[1]
    data = str(home / "stack" / "controlplane")
    proc = spawn_cli(
        home, "controlplane-restart.log", "controlplane", "serve", "--data-dir", data,
        "--host", "127.0.0.1", "--port", port,
    )  # fmt: skip
    for _ in range(300):
        if cp.healthy():
            break
        time.sleep(0.2)
    return proc


@pytest.mark.parametrize("stack", [1], indirect=True)
def test_restarted_control_plane_does_not_fail_completed_work(
    stack: stack_mod.Stack, home: Path, tmp_path: Path
) -> None:
    """kill -9 of the control plane; the run completes in the enclave while it is down
    (longer than the agent timeout, so the agent backs off); after the restart the host
    is not declared lost at once, the agent's receipt completes the computation, and the
    consumer gets the result."""
    cp = ControlPlaneClient(stack.url, stack.admin_key)
    p = Parties()
    doc = manifest_doc(p, tmp_path, "cp-down-run")
    comp = cp.wait_for(cp.create_computation(doc).id, ("awaiting_inputs",), 90)
    os.killpg(stack.controlplane_pid, signal.SIGKILL)
    upload_inputs(comp.enclave_url or "", doc, p, tmp_path, home)
    outbox = next((home / "stack" / "agent-1" / "enclaves").glob("*/outbox"))
    for _ in range(600):  # the enclave finished while nobody could hear it
        if (outbox / "DONE").exists():
            break
        time.sleep(0.1)
    assert (outbox / "DONE").exists()
    time.sleep(15)  # down well past the agent timeout (6 s): the agent's backoff grows
    proc = restart_controlplane(stack, home, cp)
    try:
        done = cp.wait_for(comp.id, ("completed", "destroyed"), 120)
        entered = [e.state for e in cp.events(comp.id) if e.type == "state"]
        assert "failed" not in entered, (done, entered)
        assert cp.hosts()[0].state == "online"
        root = SimAuthority.load_or_create(home / "sim-authority").root
        receipt = None
        for _ in range(100):  # the agent hands the blobs over once it reaches us again
            try:
                receipt = cp.fetch_result(
                    comp.id,
                    Manifest.from_dict(doc),
                    p.alice,
                    tmp_path / "out",
                    extra_roots=(root,),
                )
                break
            except ConflictError:
                time.sleep(0.3)
        assert receipt is not None and receipt.ok, "the result was refused"
        assert (tmp_path / "out" / "answer.txt").read_text() == "42"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


@pytest.mark.parametrize("stack", [1], indirect=True)
def test_controlplane_kill9_and_restart(stack: stack_mod.Stack, home: Path, tmp_path: Path) -> None:
    cp = ControlPlaneClient(stack.url, stack.admin_key)
    p = Parties()
    doc = manifest_doc(p, tmp_path, "crash-cp")
    comp = cp.create_computation(doc)
    cp.wait_for(comp.id, ("awaiting_inputs",), 90)
    os.killpg(stack.controlplane_pid, signal.SIGKILL)
    # the enclave does not need the control plane: parties go on
    root = SimAuthority.load_or_create(home / "sim-authority").root
    proc = restart_controlplane(stack, home, cp)
    try:
        comp2 = cp.computation(comp.id)  # nothing lost
        assert comp2.manifest_hash == comp.manifest_hash
        enclave = EnclaveClient(
            comp2.enclave_url or "", Manifest.from_dict(doc), extra_roots=(root,)
        )
        enclave.attest()
        enclave.upload("algorithm", tmp_path / "main.py", p.algo)
        enclave.upload("a", tmp_path / "a", p.dp1)
        enclave.upload("b", tmp_path / "b", p.dp2)
        done = cp.wait_for(comp.id, ("completed", "destroyed"), 120)
        assert done.state in ("completed", "destroyed"), done
        events = cp.events(comp.id)
        # Each state was entered once, even with the agent re-reporting across the restart.
        entered = [e.state for e in events if e.type == "state"]
        assert len(entered) == len(set(entered)), entered
        assert "awaiting_inputs" in entered and "completed" in entered
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


@pytest.mark.parametrize("stack", [1], indirect=True)
def test_agent_kill9_fails_its_computations(stack: stack_mod.Stack, tmp_path: Path) -> None:
    cp = ControlPlaneClient(stack.url, stack.admin_key)
    p = Parties()
    comp = cp.create_computation(manifest_doc(p, tmp_path, "crash-agent"))
    cp.wait_for(comp.id, ("awaiting_inputs",), 90)
    os.killpg(stack.agent_pids[0], signal.SIGKILL)
    done = cp.wait_for(comp.id, ("failed",), 60)
    assert done.state == "failed" and "host lost" in (done.reason or "")
    assert cp.hosts()[0].state == "lost"


@pytest.mark.parametrize("stack", [1], indirect=True)
def test_admin_key_not_in_stack_log(stack: stack_mod.Stack, home: Path) -> None:
    """`sealroom up` keeps the bootstrap admin key out of its log files (the key lives in
    0600 files only), its logs are private, and no agent has its join token in argv."""
    logs = home / "stack" / "logs"
    files = sorted(p for p in logs.iterdir() if p.is_file())
    assert files, "the stack wrote no logs"
    for p in files:
        assert stack.admin_key not in p.read_text(errors="replace"), p
    for p in files:
        assert p.stat().st_mode & 0o077 == 0, f"{p} is {oct(p.stat().st_mode)}"
    assert logs.stat().st_mode & 0o077 == 0
    key_file = home / "stack" / "controlplane" / "bootstrap-admin-key"
    assert key_file.read_text().strip() == stack.admin_key
    assert key_file.stat().st_mode & 0o777 == 0o600
    for pid in stack.agent_pids:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"srj_" not in argv and b"--join-token-file" in argv
    assert not (home / "stack" / "agent-1" / "join-token").exists()  # used, then removed


@pytest.mark.parametrize("stack", [1], indirect=True)
def test_orphaned_enclave_stopped_within_orphan_window(
    stack: stack_mod.Stack, home: Path, tmp_path: Path
) -> None:
    """kill -9 of the agent process alone: its enclave runs on, orphaned, and holds the
    host's capacity in the control plane; the sim TEE watchdog stops it within the orphan
    window (default 30 s, was 10 min); the restarted agent reports it gone, and only then
    is the capacity free."""
    cp = ControlPlaneClient(stack.url, stack.admin_key)
    p = Parties()
    comp = cp.create_computation(manifest_doc(p, tmp_path, "orphan"))
    up = cp.wait_for(comp.id, ("awaiting_inputs",), 90)
    assert up.state == "awaiting_inputs", (up, cp.events(comp.id))
    agent_dir = home / "stack" / "agent-1"
    rt_pid = AgentStore(agent_dir).load()[0][comp.id].pid
    os.kill(stack.agent_pids[0], signal.SIGKILL)  # the agent only, not its group
    assert pid_alive(rt_pid)
    failed = cp.wait_for(comp.id, ("failed",), 60)
    assert "host lost" in failed.reason
    host = cp.hosts()[0]
    assert host.state == "lost" and host.enclaves == 1  # still held
    for _ in range(600):  # bounded by the orphan window: 30 s plus the watchdog's grace
        if not pid_alive(rt_pid):
            break
        time.sleep(0.2)
    assert not pid_alive(rt_pid), "the orphaned enclave outlived the orphan window"
    assert cp.computation(comp.id).state == "failed"  # not yet known stopped
    agent = spawn_cli(
        home, "agent-restart.log", "agent", "run", "--control-plane", stack.url,
        "--data-dir", str(agent_dir), "--name", "host-1",
    )  # fmt: skip
    try:
        wait_destroyed(cp, comp.id)
        host = cp.hosts()[0]
        assert host.state == "online" and host.enclaves == 0
        assert host.resources.cpu_used == 0
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
        agent.wait(30)
