"""Continuous attestation of a running service (docs/adr/0033), on real components: the
service enclave (sim TEE, real sandbox), the agent's relay with its fail-closed gate, the
monitor with the owner's policy. Negatives: bad evidence, stale nonce, missed period,
an enclave replaced under the same address."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from sealroom.cli.main import app
from sealroom.client.attest_monitor import AttestationMonitor
from sealroom.client.enclave import PinnedHTTPSConnection
from sealroom.client.service import ServiceClient
from sealroom.client.tlog import LogClient
from sealroom.crypto.signing import verify_signed_json
from sealroom.errors import AttestationError, InvalidInputError
from sealroom.hostagent.launcher import LocalEnclave, launch_local
from sealroom.hostagent.relay import TcpToUnixRelay
from sealroom.protocol.service import HEARTBEAT_DOMAIN, WELL_KNOWN_ATTESTATION, heartbeat_hash
from sealroom.testing.postgres import free_port
from tests.runtime.test_service_e2e import _roots, sim_policy, sim_policy_doc, write_spec

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("SEALROOM_HOME", str(h))
    return h


class Stack:
    def __init__(self, home: Path, tmp: Path) -> None:
        self.home, self.tmp = home, tmp
        self.spec = write_spec(tmp, 1)
        # A short path: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be longer.
        self.sock_dir = Path(tempfile.mkdtemp(prefix="sealroom-svc-"))
        self.sock = self.sock_dir / "svc.sock"
        self.enclave = self.launch()
        self.public = TcpToUnixRelay(self.sock).start()
        self.private = TcpToUnixRelay(self.sock).start()

    def launch(self) -> LocalEnclave:
        return launch_local(
            self.spec, tee="sim", listen=f"unix:{self.sock}", home=self.home, is_service=True
        )

    def monitor(self, period: float = 3600.0, **kw: Any) -> AttestationMonitor:
        policy = kw.pop("policy", None) or sim_policy()
        client = ServiceClient(
            self.private.endpoint, policy, extra_roots=_roots(self.home), timeout=5.0
        )
        return AttestationMonitor(
            client,
            Ed25519PrivateKey.generate(),
            period=period,
            on_untrusted=self.public.close_gate,
            on_trusted=self.public.open_gate,
            **kw,
        )

    def get(self, path: str = "/hi") -> bytes:
        conn = PinnedHTTPSConnection("127.0.0.1", self.public.port, None, 10.0)
        try:
            conn.request("GET", path)
            return conn.getresponse().read()
        finally:
            conn.close()

    def close(self) -> None:
        self.public.stop()
        self.private.stop()
        self.enclave.stop()
        shutil.rmtree(self.sock_dir, ignore_errors=True)


@pytest.fixture
def stack(home: Path, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(home, tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_good_heartbeats_are_signed_and_chained(stack: Stack) -> None:
    m = stack.monitor()
    first, second = m.beat(), m.beat()
    key = m.signer.public_key()
    p1 = verify_signed_json(first, key, HEARTBEAT_DOMAIN)
    p2 = verify_signed_json(second, key, HEARTBEAT_DOMAIN)
    assert p1["ok"] and p2["ok"] and p1["simulated"]
    assert p1["nonce"] != p2["nonce"]  # a fresh nonce each time, chosen by the monitor
    assert p2["prev"] == heartbeat_hash(first) and p1["prev"] == ""
    assert m.trusted and m.last_good is not None
    assert stack.get() == b"hello /hi world"


def test_bad_evidence_fails_closed(stack: Stack) -> None:
    m = stack.monitor(policy=sim_policy(snp={"measurements": ["00" * 48]}))
    rec = m.beat()["payload"]
    assert not rec["ok"] and rec["reason"].startswith("policy-violation")
    assert not m.trusted and stack.public.gate_closed
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        stack.get()


def test_open_connection_is_cut_when_the_enclave_becomes_untrusted(stack: Stack) -> None:
    m = stack.monitor()
    m.beat()
    conn = PinnedHTTPSConnection("127.0.0.1", stack.public.port, None, 10.0)
    conn.request("GET", "/one")
    assert conn.getresponse().read() == b"hello /one world"
    stack.public.close_gate("test: untrusted")

    def again() -> bytes:
        conn.request("GET", "/two")
        return conn.getresponse().read()

    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        again()
    conn.close()


def test_stale_nonce_is_refused(stack: Stack) -> None:
    client = ServiceClient(stack.private.endpoint, sim_policy(), extra_roots=_roots(stack.home))
    old = bytes(range(32))
    conn = PinnedHTTPSConnection("127.0.0.1", stack.private.port, None, 10.0)
    conn.request("GET", f"{WELL_KNOWN_ATTESTATION}?nonce={old.hex()}")
    body = conn.getresponse().read()
    spki = conn.peer_spki
    conn.close()
    assert client.verify_answer(body, old, spki).appraisal.ok  # genuine for its own nonce
    fresh = bytes(reversed(range(32)))
    with pytest.raises(AttestationError) as e:
        client.verify_answer(body, fresh, spki)  # replayed for a new challenge
    assert e.value.code == "stale-nonce"
    forged = json.loads(body)
    forged["nonce"] = fresh.hex()  # ... and with its nonce field rewritten
    with pytest.raises(AttestationError) as e:
        client.verify_answer(json.dumps(forged).encode(), fresh, spki)
    assert e.value.code == "binding-mismatch"


def test_missed_period_fails_closed_then_recovers(stack: Stack) -> None:
    events: list[str] = []
    m = stack.monitor(period=1.0, grace=2.0, on_heartbeat=lambda s: events.append("beat"))

    def untrusted(reason: str) -> None:
        events.append(reason)
        stack.public.close_gate(reason)

    m.on_untrusted = untrusted
    m.start()
    try:
        _wait(lambda: m.trusted, "first heartbeat")
        assert stack.get() == b"hello /hi world"
        os.kill(stack.enclave.process.pid, signal.SIGSTOP)  # the enclave stops answering
        try:
            _wait(lambda: not m.trusted, "the missed heartbeat")
            assert stack.public.gate_closed
            assert any(e.startswith("heartbeat-missed") or "unavailable" in e for e in events)
        finally:
            os.kill(stack.enclave.process.pid, signal.SIGCONT)
        m.trigger()
        _wait(lambda: m.trusted, "a good heartbeat after the enclave answered again")
        assert stack.public.gate_closed is None
    finally:
        m.stop()


def test_replaced_enclave_is_untrusted(stack: Stack) -> None:
    m = stack.monitor()
    assert m.beat()["payload"]["ok"]
    stack.enclave.stop()
    stack.enclave = stack.launch()  # same spec, same address, new keys
    rec = m.beat()["payload"]
    assert not rec["ok"] and rec["reason"].startswith("enclave-keys-changed")
    assert stack.public.gate_closed


def _wait(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_cli_run_with_heartbeats_and_verify_shows_last_good(home: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    spec = write_spec(tmp_path, 1)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(sim_policy_doc()))
    beats = tmp_path / "beats.jsonl"
    env = {**os.environ, "SEALROOM_HOME": str(home)}
    cmd = [sys.executable, "-m", "sealroom.cli.main", "service", "run", "--spec", str(spec)]
    cmd += ["--attest-every", "1", "--policy", str(policy), "--heartbeats", str(beats), "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        _wait(lambda: beats.exists() and beats.read_text().count("\n") >= 3, "three heartbeats")
        assert oct(beats.stat().st_mode & 0o777) == "0o600"
        args = ["service", "verify", info["url"], "--policy", str(policy)]
        args += ["--heartbeats", str(beats), "--heartbeat-key", info["heartbeat_key"]]
        r = CliRunner().invoke(app, args, env={"SEALROOM_HOME": str(home)})
        assert r.exit_code == 0, r.output
        assert "heartbeats" in r.output and "last good" in r.output
        r = CliRunner().invoke(app, [*args, "--json"], env={"SEALROOM_HOME": str(home)})
        shown = json.loads(r.stdout)["heartbeats"]
        assert shown["latest_ok"] and shown["last_good"].startswith("20") and shown["count"] >= 2
        # A forged key, and a log with a record removed, are refused.
        bad = [*args[:-1], Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()]
        assert CliRunner().invoke(app, bad).exit_code != 0
        lines = beats.read_text().splitlines()
        (tmp_path / "cut.jsonl").write_text("\n".join([lines[0], *lines[2:]]) + "\n")
        cut = [*args[:-3], str(tmp_path / "cut.jsonl"), *args[-2:]]
        r = CliRunner().invoke(app, cut)
        assert isinstance(r.exception, AttestationError)
        assert r.exception.code == "heartbeat-chain-broken"
    finally:
        proc.terminate()
        proc.wait(60)


def test_unlogged_heartbeat_keeps_the_gate_closed(stack: Stack) -> None:
    """A heartbeat that cannot be published (the log is down) does not count: the gate
    stays closed until one is both verified and logged."""
    dead = LogClient(f"http://127.0.0.1:{free_port()}", "admin-key")
    logged: list[dict[str, Any]] = []
    m = stack.monitor(publish=lambda signed: dead.append("heartbeat", signed))
    rec = m.beat()["payload"]
    assert rec["ok"]  # the evidence verified ...
    assert not m.trusted and m.untrusted_reason.startswith("heartbeat-unlogged")  # ... unlogged
    assert stack.public.gate_closed
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        stack.get()
    m.publish = logged.append
    m.beat()
    assert m.trusted and stack.public.gate_closed is None and len(logged) == 1
    assert stack.get() == b"hello /hi world"


def test_watchdog_fails_closed_while_the_log_hangs(stack: Stack) -> None:
    """A publish that hangs holds the heartbeat chain; the watchdog must still close the
    gate when the period passes (it does not wait for the chain)."""
    now = [datetime(2026, 12, 5, tzinfo=UTC)]
    release = threading.Event()
    hanging = threading.Event()

    def publish(signed: dict[str, Any]) -> None:
        if signed["payload"]["seq"] > 0:
            hanging.set()
            release.wait(120)

    m = stack.monitor(period=10.0, publish=publish, clock=lambda: now[0])
    m.beat()
    assert m.trusted and stack.public.gate_closed is None
    beat = threading.Thread(target=m.beat, daemon=True)
    beat.start()
    _wait(hanging.is_set, "the hanging publish")
    now[0] += timedelta(seconds=21)  # period x grace passed
    watchdog = threading.Thread(target=m.check_missed, daemon=True)
    watchdog.start()
    try:
        _wait(lambda: stack.public.gate_closed is not None, "the watchdog to close the gate")
        assert not m.trusted and m.untrusted_reason.startswith("heartbeat-missed")
    finally:
        release.set()
        beat.join(60)
        watchdog.join(60)


def test_verify_json_refuses_an_untrusted_latest_heartbeat(stack: Stack, tmp_path: Path) -> None:
    """Defect: with --json, `service verify --heartbeats` printed its document and exited
    0 when the latest heartbeat was UNTRUSTED (only the table form raised)."""
    m = stack.monitor(policy=sim_policy(snp={"measurements": ["00" * 48]}))
    signed = m.beat()
    assert not signed["payload"]["ok"]
    key = m.signer.public_key().public_bytes_raw().hex()
    beats = tmp_path / "beats.jsonl"
    beats.write_text(json.dumps({"signer": key, "heartbeat": signed}) + "\n")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(sim_policy_doc()))
    args = ["service", "verify", stack.private.endpoint, "--policy", str(policy)]
    args += ["--heartbeats", str(beats), "--heartbeat-key", key]
    for extra in ([], ["--json"]):
        r = CliRunner().invoke(app, [*args, *extra], env={"SEALROOM_HOME": str(stack.home)})
        assert isinstance(r.exception, AttestationError), r.output
        assert r.exception.code == "heartbeat-untrusted"


def test_run_refuses_an_existing_heartbeat_file(home: Path, tmp_path: Path) -> None:
    """Defect: `service run --heartbeats F` appended to an existing F, so a second run put
    a new chain under a new key after the first one and `verify` reported the whole file
    as heartbeat-chain-broken. Each run now needs a new file; nothing starts otherwise."""
    spec = write_spec(tmp_path, 1)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(sim_policy_doc()))
    beats = tmp_path / "beats.jsonl"
    beats.write_text("earlier run\n")
    args = ["service", "run", "--spec", str(spec), "--attest-every", "1"]
    args += ["--policy", str(policy), "--heartbeats", str(beats)]
    r = CliRunner().invoke(app, args, env={"SEALROOM_HOME": str(home)})
    assert isinstance(r.exception, InvalidInputError), r.output
    assert r.exception.code == "heartbeat-file-exists"
    assert beats.read_text() == "earlier run\n"


def _watch(stack: Stack, policy: Path, beats: Path, *extra: str) -> Any:
    args = ["service", "watch", stack.public.endpoint, "--policy", str(policy)]
    args += ["--every", "0.1", "--count", "2", "--heartbeats", str(beats), "--json", *extra]
    return CliRunner().invoke(app, args, env={"SEALROOM_HOME": str(stack.home)})


def test_watch_a_remote_service(stack: Stack, tmp_path: Path) -> None:
    """`service watch`: a verifier that does not run the service (the owner, a client)
    keeps attesting it; its heartbeats verify with `service verify --heartbeats`."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(sim_policy_doc()))
    beats = tmp_path / "watch.jsonl"
    r = _watch(stack, policy, beats)
    assert r.exit_code == 0, r.output
    key = json.loads(r.stdout.splitlines()[0])["heartbeat_key"]
    lines = [json.loads(x) for x in beats.read_text().splitlines()]
    assert [x["heartbeat"]["payload"]["seq"] for x in lines] == [0, 1]
    assert oct(beats.stat().st_mode & 0o777) == "0o600"
    args = ["service", "verify", stack.public.endpoint, "--policy", str(policy)]
    args += ["--heartbeats", str(beats), "--heartbeat-key", key, "--max-age", "3600"]
    r = CliRunner().invoke(app, args, env={"SEALROOM_HOME": str(stack.home)})
    assert r.exit_code == 0, r.output
    assert "last good" in r.output

    # the owner's policy refuses this enclave: the heartbeats say so, the watch exits 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(sim_policy_doc(snp={"measurements": ["00" * 48]})))
    r = _watch(stack, bad, tmp_path / "bad.jsonl")
    assert isinstance(r.exception, AttestationError) and r.exception.code == "heartbeat-untrusted"
    recs = [json.loads(x)["heartbeat"]["payload"] for x in (tmp_path / "bad.jsonl").open()]
    assert len(recs) == 2 and not any(x["ok"] for x in recs)
    assert recs[0]["reason"].startswith("policy-violation")

    # the service stops answering (its gate closed): failed heartbeats, exit 2
    stack.public.close_gate("test")
    r = _watch(stack, policy, tmp_path / "closed.jsonl")
    assert isinstance(r.exception, AttestationError) and r.exception.code == "heartbeat-untrusted"


def test_a_heartbeat_published_too_late_does_not_open_the_gate(stack: Stack) -> None:
    """A log that takes longer than period x grace to take a good heartbeat: by then the
    watchdog has failed the enclave, and that old evidence must not reopen the gate."""
    now = [datetime(2026, 12, 5, tzinfo=UTC)]

    def slow_publish(signed: dict[str, Any]) -> None:
        now[0] += timedelta(seconds=25)  # period 10 x grace 2 = 20 s

    m = stack.monitor(period=10.0, publish=slow_publish, clock=lambda: now[0])
    rec = m.beat()["payload"]
    assert rec["ok"]  # the evidence verified when it was fetched ...
    assert not m.trusted and m.untrusted_reason.startswith("heartbeat-late")  # ... too long ago
    assert stack.public.gate_closed
