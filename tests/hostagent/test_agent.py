"""The host agent's reconcile loop against a fake control plane (tests/hostagent/fakecp.py):
registration once, launch on desired, endpoint through the relay with attested TLS, a
three-party run with blobs uploaded, stop, TTL, control-plane outage, agent SIGKILL and
re-adoption; resources from the real machine minus the reserve."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sealroom.hostagent.agent import EVENT_BATCH, Agent, AgentConfig
from sealroom.hostagent.backends.process import RelayAddress, Timeouts
from sealroom.hostagent.resources import Reserve, cpu_count, machine_resources, memory_mb
from sealroom.hostagent.simtee import pid_alive
from sealroom.hostagent.state import AgentStore
from tests.hostagent.fakecp import CREDENTIAL, TOKEN, FakeControlPlane
from tests.runtime.test_enclave_e2e import Parties, client, make_manifest, parties, write_inputs

__all__ = ["parties"]

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)
REPO = Path(__file__).resolve().parents[2]


def wait_for(pred: Callable[[], Any], what: str, tries: int = 1200, every: float = 0.05) -> Any:
    for _ in range(tries):
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_leftovers(data_dir: Path) -> None:
    """Enclaves outlive the agent by design: the test ends the ones it caused."""
    with contextlib.suppress(Exception):
        records, _ = AgentStore(data_dir).load()
        for rec in records.values():
            for pid, marker in ((rec.pid, rec.socket), (rec.tee_pid, "simtee")):
                if pid and pid_alive(pid):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if marker and marker.encode() in cmd:
                        os.kill(pid, signal.SIGKILL)
    tag = hashlib.sha256(os.fsencode(data_dir.resolve())).hexdigest()[:12]
    shutil.rmtree(Path(tempfile.gettempdir()) / f"sealroom-agent-{tag}", ignore_errors=True)


@pytest.fixture
def cp() -> Iterator[FakeControlPlane]:
    fake = FakeControlPlane().start()
    yield fake
    fake.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "agent"
    yield d
    _kill_leftovers(d)


class Running:
    """An in-process agent on a thread."""

    def __init__(self, config: AgentConfig) -> None:
        self.agent = Agent(config)
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self, enclaves: bool = True) -> None:
        self.agent.stop_event.set()
        self.thread.join(60)
        if enclaves:
            for enc in list(self.agent.enclaves.values()):
                enc.stop()
        shutil.rmtree(self.agent.backend.run_dir, ignore_errors=True)


@pytest.fixture
def start_agent(cp: FakeControlPlane, data_dir: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(**kw: Any) -> Running:
        cfg = AgentConfig(
            control_plane=cp.url,
            data_dir=data_dir,
            join_token=TOKEN,
            name="test-host",
            heartbeat=0.3,
            backoff_base=0.2,
            backoff_max=1.0,
            sim_authority=data_dir / "sim-authority",
            **kw,
        )
        r = Running(cfg)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def manifest_doc(tmp: Path, p: Parties, mid: str, **kw: Any) -> tuple[dict[str, Any], Path]:
    files = write_inputs(tmp)
    path = make_manifest(tmp, p, files, mid=mid, **kw)
    return json.loads(path.read_text()), files


def endpoint_of(cp: FakeControlPlane, cid: str) -> str:
    def ready() -> str | None:
        with cp.lock:
            c = cp.comps[cid]
            return c.endpoint if c.state == "awaiting_inputs" else None

    return str(wait_for(ready, f"{cid} awaiting inputs with an endpoint"))


def run_parties(url: str, manifest: Path, home: Path, p: Parties, files: Path) -> Any:
    c = client(url, manifest, home)
    att = c.attest()
    c.upload("algorithm", files / "main.py", p.algo)
    c.upload("a", files / "a.txt", p.dp1)
    c.upload("b", files / "b.txt", p.dp2)
    return c, att


# ---- resources, state --------------------------------------------------------------------
def test_resources_are_the_machine_minus_the_reserve(tmp_path: Path) -> None:
    res = machine_resources(tmp_path, Reserve(cpus=1, memory_mb=512), [(1, 256), (2, 1024)])
    assert res["cpu_total"] == max(0, cpu_count() - 1)
    assert res["memory_mb_total"] == memory_mb() - 512 > 0
    assert (res["cpu_used"], res["memory_mb_used"]) == (3, 1280)
    du = shutil.disk_usage(tmp_path)
    assert res["disk_mb_total"] == du.total // 2**20
    assert set(res) == {
        "cpu_total",
        "cpu_used",
        "memory_mb_total",
        "memory_mb_used",
        "gpu_total",
        "gpu_used",
        "disk_mb_total",
        "disk_mb_used",
    }


def test_gpus_counted_with_nvidia_smi_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sealroom.hostagent.resources import gpu_count

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, NVIDIA H100'\necho '1, NVIDIA H100'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert gpu_count() == 2
    fake.write_text("#!/bin/sh\nexit 9\n")
    assert gpu_count() == 0  # a failing tool means none, not a crash


# ---- the loop ---------------------------------------------------------------------------------
def test_registers_once_and_reuses_the_credential(
    cp: FakeControlPlane, data_dir: Path, start_agent: Callable[..., Running]
) -> None:
    a = start_agent(reserve=Reserve(cpus=0, memory_mb=256))
    wait_for(lambda: cp.calls["heartbeat"] >= 2, "heartbeats")
    a.stop()
    cred = data_dir / "agent.json"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert json.loads(cred.read_text())["credential"] == CREDENTIAL
    reg = cp.registrations[0]
    assert reg["name"] == "test-host" and reg["tee_kinds"] == ["sim"]
    assert reg["resources"]["memory_mb_total"] == memory_mb() - 256
    hb = cp.heartbeats[-1]
    assert hb["tee_kinds"] == ["sim"] and hb["enclaves"] == []
    assert hb["resources"]["cpu_total"] == cpu_count()
    # restart: the same identity, no second registration (the token is one-time anyway)
    before = cp.calls["heartbeat"]
    start_agent()
    wait_for(lambda: cp.calls["heartbeat"] >= before + 2, "heartbeats after restart")
    assert cp.calls["register"] == 1


@needs_bwrap
def test_full_run_through_the_relay_with_blobs_uploaded(
    tmp_path: Path,
    cp: FakeControlPlane,
    data_dir: Path,
    parties: Parties,
    start_agent: Callable[..., Running],
) -> None:
    doc, files = manifest_doc(tmp_path, parties, "agent-full")
    cp.add("c1", doc)
    a = start_agent()
    url = endpoint_of(cp, "c1")
    assert url.startswith("https://127.0.0.1:")
    manifest = tmp_path / "manifest-agent-full.json"
    # resources: used = the live enclave's limits
    wait_for(lambda: cp.heartbeats[-1]["resources"]["cpu_used"] == 1, "cpu_used reported")
    assert cp.heartbeats[-1]["resources"]["memory_mb_used"] == 256
    c, att = run_parties(url, manifest, data_dir, parties, files)
    assert att.simulated
    wait_for(lambda: cp.comps["c1"].state == "completed", "completed reported")
    comp = cp.comps["c1"]
    # blobs were stored before the final state was reported
    assert set(comp.blobs) == {"receipt", "result.alice", "log.alice"}
    receipt = json.loads(comp.blobs["receipt"])
    verified = c.verify_receipt(receipt)
    assert verified.ok
    assert (
        hashlib.sha256(comp.blobs["result.alice"]).hexdigest()
        == verified.payload["results"]["alice"]["sha256"]
    )
    # events forwarded once each, in order, never the algorithm's output
    assert sorted(comp.events)[0] == 1
    types = {e["type"] for e in comp.events.values()}
    assert {"upload_accepted", "run_started", "completed"} <= types and "output" not in types
    assert cp.duplicate_events == 0
    assert cp.comps["c1"].stats["vcpus"] == 1  # stats travel with the reports
    # every transition reported once, in order, none skipped (the run itself is fast)
    sent = [
        t["state"]
        for hb in cp.heartbeats
        for e in hb["enclaves"]
        if e["computation_id"] == "c1"
        for t in e["transitions"]
    ]
    assert sent[:4] == ["launching", "awaiting_inputs", "running", "completed"]
    assert comp.history[:4] == ["launching", "awaiting_inputs", "running", "completed"]
    assert cp.refused == []
    # then the enclave is stopped and forgotten
    wait_for(lambda: "c1" not in a.agent.enclaves, "enclave dropped after the final report")
    wait_for(lambda: cp.heartbeats[-1]["enclaves"] == [], "no enclave reported any more")
    assert cp.heartbeats[-1]["resources"]["cpu_used"] == 0
    _, launched = AgentStore(data_dir).load()
    assert launched == {"c1"}  # and never launched again


@needs_bwrap
def test_stop_and_input_ttl(
    tmp_path: Path,
    cp: FakeControlPlane,
    data_dir: Path,
    parties: Parties,
    start_agent: Callable[..., Running],
) -> None:
    doc1, _ = manifest_doc(tmp_path, parties, "agent-stop")
    cp.add("c-stop", doc1)
    a = start_agent(timeouts=Timeouts(inputs=3.0))
    endpoint_of(cp, "c-stop")
    pid = a.agent.enclaves["c-stop"].record.pid
    assert pid_alive(pid)
    cp.cancel("c-stop")
    wait_for(lambda: not pid_alive(pid), "the cancelled enclave's process to end")
    wait_for(lambda: "c-stop" not in a.agent.enclaves, "the cancelled enclave dropped")
    # TTL: nobody uploads; after the input timeout the enclave is destroyed and fails
    (tmp_path / "two").mkdir()
    doc2, _ = manifest_doc(tmp_path / "two", parties, "agent-ttl")
    cp.add("c-ttl", doc2)
    wait_for(lambda: cp.comps["c-ttl"].state == "failed", "TTL failure", tries=2400)
    assert "awaiting inputs" in cp.comps["c-ttl"].reason
    assert "input timeout 3 s" in cp.comps["c-ttl"].reason


@needs_bwrap
def test_control_plane_outage_backoff_and_recovery_without_duplicates(
    tmp_path: Path,
    cp: FakeControlPlane,
    data_dir: Path,
    parties: Parties,
    start_agent: Callable[..., Running],
) -> None:
    doc, files = manifest_doc(tmp_path, parties, "agent-outage")
    cp.add("c2", doc)
    a = start_agent()
    url = endpoint_of(cp, "c2")
    pid = a.agent.enclaves["c2"].record.pid
    cp.stop()
    before = cp.calls["heartbeat"]
    wait_for(lambda: a.agent.failures >= 3, "failed heartbeats while the CP is down")
    assert a.thread.is_alive()  # never crashes
    # parties can still use the enclave while the control plane is away
    run_parties(url, tmp_path / "manifest-agent-outage.json", data_dir, parties, files)
    wait_for(lambda: a.agent.enclaves["c2"].state.value == "completed", "completed locally")
    cp.start()  # same port, same state
    wait_for(lambda: cp.comps["c2"].state == "completed", "completed reported after outage")
    assert cp.calls["heartbeat"] > before
    assert set(cp.comps["c2"].blobs) == {"receipt", "result.alice", "log.alice"}
    assert cp.duplicate_events == 0
    assert a.agent.failures == 0
    # one launch only: the same runtime process did the whole run
    assert cp.comps["c2"].state == "completed"
    _, launched = AgentStore(data_dir).load()
    assert launched == {"c2"}
    wait_for(lambda: not pid_alive(pid), "the enclave stopped after its final report")


@needs_bwrap
def test_agent_sigkill_and_restart_readopts_the_live_enclave(
    tmp_path: Path, cp: FakeControlPlane, data_dir: Path, parties: Parties
) -> None:
    doc, files = manifest_doc(tmp_path, parties, "agent-kill")
    cp.add("c3", doc)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "SEALROOM_JOIN_TOKEN": TOKEN}
    cmd = [
        sys.executable,
        "-m",
        "sealroom.hostagent",  # the same options as `sealroom agent run`
        "run",
        "--control-plane",
        cp.url,
        "--data-dir",
        str(data_dir),
        "--heartbeat",
        "0.3",
        "--sim-authority",
        str(data_dir / "sim-authority"),
    ]
    log = tmp_path / "agent.log"
    with log.open("ab") as out:
        agent = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)
    second: subprocess.Popen[bytes] | None = None
    try:
        url1 = endpoint_of(cp, "c3")
        manifest = tmp_path / "manifest-agent-kill.json"
        first_keys = client(url1, manifest, data_dir).attest().keys.digest
        records, _ = AgentStore(data_dir).load()
        rt_pid = records["c3"].pid
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        assert pid_alive(rt_pid)  # the enclave outlives its agent
        with cp.lock:
            cp.comps["c3"].endpoint = None
        with log.open("ab") as out:
            second = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)
        url2 = wait_for(lambda: cp.comps["c3"].endpoint, "endpoint after re-adoption")
        _, att = run_parties(url2, manifest, data_dir, parties, files)
        assert att.keys.digest == first_keys  # the same enclave, not a new launch
        wait_for(lambda: cp.comps["c3"].state == "completed", "completed after re-adoption")
        assert set(cp.comps["c3"].blobs) == {"receipt", "result.alice", "log.alice"}
        assert cp.calls["register"] == 1
        # delivery is at least once: a SIGKILL between the control plane's 204 and the
        # agent saving its cursor re-sends that one batch after the restart (the control
        # plane stores each enclave seq once); no more than that one batch comes twice
        assert cp.duplicate_events <= EVENT_BATCH
        wait_for(lambda: not pid_alive(rt_pid), "the enclave stopped after its final report")
    finally:
        for p in (agent, second):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(30)
        print(log.read_text()[-3000:])


@needs_bwrap
def test_enclave_gone_while_agent_down_is_reported_lost(
    tmp_path: Path, cp: FakeControlPlane, data_dir: Path, parties: Parties, start_agent: Any
) -> None:
    doc, _ = manifest_doc(tmp_path, parties, "agent-lost")
    cp.add("c4", doc)
    a = start_agent()
    endpoint_of(cp, "c4")
    rec = a.agent.enclaves["c4"].record
    a.stop(enclaves=False)
    os.kill(rec.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(rec.pid), "runtime gone")
    start_agent()
    wait_for(lambda: cp.comps["c4"].state == "failed", "lost reported")
    assert "gone" in cp.comps["c4"].reason
    assert any(
        e["computation_id"] == "c4" and t["state"] == "failed" and "gone" in t["reason"]
        for hb in cp.heartbeats
        for e in hb["enclaves"]
        for t in e["transitions"]
    )


def test_backoff_grows_is_capped_and_jittered(tmp_path: Path) -> None:
    cfg = AgentConfig(
        control_plane="http://127.0.0.1:9",  # nothing listens there
        data_dir=tmp_path / "agent",
        backoff_base=0.5,
        backoff_max=4.0,
        sim_authority=tmp_path / "auth",
    )
    agent = Agent(cfg)
    agent.client.credential = "sra_x"
    delays = [agent.step() for _ in range(8)]  # never raises
    assert agent.failures == 8
    assert 0.25 <= delays[0] <= 0.5
    assert all(d <= 4.0 for d in delays) and max(delays) >= 2.0
    assert len(set(delays)) > 1


def test_garbage_desired_state_never_crashes_the_agent(
    tmp_path: Path, cp: FakeControlPlane, data_dir: Path
) -> None:
    """A reply that breaks the agent contract is refused whole (the agent backs off and
    launches nothing); a well-formed one with a bad manifest fails that launch once."""
    garbage: list[Any] = [
        1,
        {"action": "run"},
        {"computation_id": "x", "action": "run", "manifest": "not an object"},
        {"computation_id": "z", "action": "explode"},
    ]
    replies: list[Any] = [
        {"desired": garbage, "heartbeat_interval": 0.3},
        {"desired": [{"computation_id": "y", "action": "run", "manifest": {"version": 1}}]}
        | {"heartbeat_interval": 0.3},
    ]
    cp.on_heartbeat = lambda obj: replies[0]  # type: ignore[method-assign]
    agent = Agent(
        AgentConfig(
            control_plane=cp.url,
            data_dir=data_dir,
            join_token=TOKEN,
            sim_authority=tmp_path / "auth",
            backoff_base=0.01,
        )
    )
    agent.register()
    agent.step()
    assert agent.failures == 1 and agent.enclaves == {}  # refused, backed off, no crash
    replies.pop(0)
    agent.step()
    failed = [
        t["reason"]
        for hb in cp.heartbeats
        for e in hb["enclaves"]
        for t in e["transitions"]
        if e["computation_id"] == "y" and t["state"] == "failed"
    ]
    assert len(failed) == 1 and failed[0].startswith("launch failed: manifest has 7 problems")
    agent.step()  # asked again: never launched twice
    _, launched = AgentStore(data_dir).load()
    assert launched == {"y"}


@needs_bwrap
def test_party_on_another_address_reaches_the_enclave(
    tmp_path: Path,
    cp: FakeControlPlane,
    data_dir: Path,
    parties: Parties,
    start_agent: Callable[..., Running],
) -> None:
    """Issue 15: `agent run --listen/--advertise`. The enclave's endpoint listens on
    another address of the loopback range (as another machine's interface would) and is
    reported as that address; a party there verifies and uploads; 127.0.0.1 has nothing."""
    doc, files = manifest_doc(tmp_path, parties, "agent-listen")
    cp.add("c1", doc)
    start_agent(relay_address=RelayAddress(listen="127.0.0.2", advertise="127.0.0.2"))
    url = endpoint_of(cp, "c1")
    assert url.startswith("https://127.0.0.2:"), url
    port = int(url.rsplit(":", 1)[1])
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=5),
    ):
        pass
    manifest = tmp_path / "manifest-agent-listen.json"
    _, att = run_parties(url, manifest, data_dir, parties, files)
    assert att.simulated
    wait_for(lambda: cp.comps["c1"].state == "completed", "completed reported")
