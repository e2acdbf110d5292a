"""The process backend: limits on the enclave process, TTL, exits, adoption."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealroom.errors import InvalidInputError
from sealroom.hostagent.backends.process import (
    RUNTIME_AS_OVERHEAD_MB,
    RUNTIME_DATA_OVERHEAD_MB,
    ProcessBackend,
    ProcessEnclave,
    Timeouts,
)
from sealroom.hostagent.simtee import pid_alive
from sealroom.hostagent.state import EnclaveRecord
from sealroom.protocol.lifecycle import State
from tests.runtime.test_enclave_e2e import Parties, make_manifest, parties, write_inputs

__all__ = ["parties"]


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ProcessBackend]:
    b = ProcessBackend(tmp_path / "agent", authority_dir=tmp_path / "sim-authority")
    yield b
    shutil.rmtree(b.run_dir, ignore_errors=True)


def _record(tmp_path: Path, **kw: Any) -> EnclaveRecord:
    log = tmp_path / "runtime.jsonl"
    log.touch()
    return EnclaveRecord(
        computation_id="c",
        manifest_hash="00",
        dir=str(tmp_path),
        socket=str(tmp_path / "none.sock"),
        outbox=str(tmp_path / "outbox"),
        log=str(log),
        **kw,
    )


def _limits(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name = line[:26].strip()
        out[name] = line[26:47].strip()
    return out


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_cpu_and_memory_limits_on_the_enclave_process(
    tmp_path: Path, backend: ProcessBackend, parties: Parties
) -> None:
    doc = json.loads(
        make_manifest(tmp_path, parties, write_inputs(tmp_path), mid="lim").read_text()
    )
    enc = backend.start("c-lim", doc, "sim")
    try:
        for _ in range(600):
            if enc.poll() is State.AWAITING_INPUTS:
                break
            time.sleep(0.05)
        assert enc.state is State.AWAITING_INPUTS and enc.endpoint
        pid = enc.record.pid
        status = Path(f"/proc/{pid}/status").read_text()
        allowed = next(ln for ln in status.splitlines() if ln.startswith("Cpus_allowed_list"))
        assert allowed.split()[-1] == ",".join(map(str, enc.record.cpus))
        assert len(enc.record.cpus) == min(1, len(backend.cpus))  # limits.vcpus = 1
        lim = _limits(pid)
        assert int(lim["Max data size"]) == (256 + RUNTIME_DATA_OVERHEAD_MB) << 20
        assert int(lim["Max address space"]) == (256 + RUNTIME_AS_OVERHEAD_MB) << 20
        assert b"sealroom.runtime" in Path(f"/proc/{pid}/cmdline").read_bytes()
        stats = enc.stats()
        assert stats["rss_mb"] > 0 and "cpu_seconds" in stats
    finally:
        enc.stop()
    assert not pid_alive(enc.record.pid) and not pid_alive(enc.record.tee_pid)


def test_cpus_are_spread_over_the_least_used(tmp_path: Path) -> None:
    b = ProcessBackend(tmp_path / "a", cpus=[0, 1, 2, 3], authority_dir=tmp_path / "auth")
    assert b.allocate_cpus(2, []) == [0, 1]
    assert b.allocate_cpus(2, [[0, 1]]) == [2, 3]
    assert b.allocate_cpus(1, [[0, 1], [2]]) == [3]
    assert b.allocate_cpus(8, []) == [0, 1, 2, 3]


def test_ttl_running_past_wall_time_plus_grace_is_destroyed(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    now = time.time()
    rec = _record(tmp_path, pid=proc.pid, wall_seconds=10, state="running", running_at=now - 16)
    enc = ProcessEnclave(rec, Timeouts(run_grace=5), runtime=proc)
    assert enc.poll(now) is State.FAILED
    assert "past limits.wall_seconds=10 + grace 5 s" in rec.reason
    assert proc.poll() is not None  # destroyed


def test_ttl_not_yet_reached_leaves_it_running(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    now = time.time()
    rec = _record(tmp_path, pid=proc.pid, wall_seconds=10, state="running", running_at=now - 14)
    enc = ProcessEnclave(rec, Timeouts(run_grace=5), runtime=proc)
    try:
        assert enc.poll(now) is State.RUNNING
    finally:
        enc.stop()


def test_enclave_that_never_listens_fails_after_the_launch_timeout(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    rec = _record(tmp_path, pid=proc.pid, launched_at=time.time() - 100)
    enc = ProcessEnclave(rec, Timeouts(launch=30), runtime=proc)
    assert enc.poll() is State.FAILED
    assert "did not start within 30 s" in rec.reason


def test_runtime_exit_before_finishing_is_reported_failed_with_the_exit(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    proc.wait()
    rec = _record(tmp_path, pid=proc.pid, state="awaiting_inputs", listening_at=time.time())
    enc = ProcessEnclave(rec, Timeouts(), runtime=proc)
    assert enc.poll() is State.FAILED
    assert "exited (code 3) before finishing" in rec.reason


def test_runtime_error_line_becomes_the_reason(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sh", "-c", "exit 2"])
    proc.wait()
    rec = _record(tmp_path, pid=proc.pid)
    Path(rec.log).write_text(json.dumps({"event": "error", "message": "no bwrap"}) + "\n")
    enc = ProcessEnclave(rec, Timeouts(), runtime=proc)
    assert enc.poll() is State.FAILED
    assert rec.reason == "enclave runtime refused to start: no bwrap"


def test_adopting_a_gone_process_reports_it_lost(tmp_path: Path, backend: ProcessBackend) -> None:
    rec = _record(
        tmp_path, pid=999_999_999, state="running", reported_state="running", unreported=[]
    )
    enc = backend.adopt(rec)
    assert enc.state is State.FAILED and "is gone" in rec.reason
    assert [(t.state, t.reason) for t in enc.pending(outcome_ready=True)] == [
        (State.FAILED, rec.reason)
    ]


def test_adopting_a_finished_log_keeps_the_final_state(
    tmp_path: Path, backend: ProcessBackend
) -> None:
    rec = _record(tmp_path, pid=999_999_999, state="running")
    Path(rec.log).write_text(
        "\n".join(
            json.dumps(x)
            for x in (
                {"event": "state", "state": "running", "reason": ""},
                {"event": "state", "state": "completed", "reason": "ok"},
            )
        )
        + "\n"
    )
    enc = backend.adopt(rec)
    assert enc.state is State.COMPLETED and rec.reason == "ok"


def test_only_sim_and_valid_manifests_start(tmp_path: Path, backend: ProcessBackend) -> None:
    with pytest.raises(InvalidInputError, match="tee 'sim' only"):
        backend.start("c", {}, "snp")
    with pytest.raises(InvalidInputError):
        backend.start("c", {"version": 1}, "sim")


def test_events_forwarded_once_and_never_output(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    rec = _record(tmp_path, pid=proc.pid, state="awaiting_inputs", listening_at=time.time())
    lines = [
        {"event": "enclave_event", "seq": 1, "type": "started", "message": "m"},
        {"event": "enclave_event", "seq": 2, "type": "upload_accepted", "message": "m"},
        {"event": "enclave_event", "seq": 2, "type": "upload_accepted", "message": "m"},
    ]
    Path(rec.log).write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"event": "st')
    enc = ProcessEnclave(rec, Timeouts(), runtime=proc)
    try:
        enc.poll()
        assert [e["seq"] for e in enc.pending_events] == [1, 2]
        enc.events_acked(2)
        assert enc.pending_events == [] and rec.events_sent == 2
        with open(rec.log, "a") as f:  # the partial line completes later
            f.write('ate", "state": "running", "reason": ""}\n')
        assert enc.poll() is State.RUNNING
    finally:
        enc.stop()


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_orphan_watchdog_stops_an_enclave_whose_agent_is_gone(
    tmp_path: Path, parties: Parties
) -> None:
    b = ProcessBackend(
        tmp_path / "agent", authority_dir=tmp_path / "sim-authority", orphan_timeout=1.0
    )
    path = make_manifest(tmp_path, parties, write_inputs(tmp_path), mid="orphan")
    b.touch_alive()
    enc = b.start("c-orphan", json.loads(path.read_text()), "sim")
    try:
        for _ in range(600):
            b.touch_alive()  # the agent is alive while the enclave starts
            if enc.poll() is State.AWAITING_INPUTS:
                break
            time.sleep(0.05)
        assert pid_alive(enc.record.pid)
        old = time.time() - 120
        os.utime(b.alive_file, (old, old))  # the agent stopped touching it long ago
        for _ in range(600):
            if enc.poll() is not State.AWAITING_INPUTS:
                break
            time.sleep(0.05)
        # SIGTERM: the runtime wipes its storage and says so ("runtime stopped")
        assert enc.state.final, enc.state
        for _ in range(200):
            if not pid_alive(enc.record.pid):
                break
            time.sleep(0.05)
        assert not pid_alive(enc.record.pid)
    finally:
        enc.stop()
        shutil.rmtree(b.run_dir, ignore_errors=True)
