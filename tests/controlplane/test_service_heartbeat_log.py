"""Continuous attestation in the transparency log (docs/adr/0033), as a user runs it:
`sealroom service run --attest-every --log URL` in its own process (sim TEE, bubblewrap
sandbox, relays) logs its deployment and every heartbeat in a control plane served by
uvicorn on 127.0.0.1; `sealroom service verify --heartbeats --log --log-key --max-age`
checks the latest heartbeat's age and its inclusion under a checkpoint signed by the log
key the verifier pinned. Negatives: another log's key, a log index that names another
entry, a heartbeat that was never logged, a stale heartbeat file, a dead log at start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealroom.cli.main import run
from sealroom.client.attest_monitor import AttestationMonitor
from sealroom.client.heartbeats import HeartbeatSink
from sealroom.client.service import ServiceClient
from sealroom.client.tlog import LogClient
from sealroom.testing.postgres import free_port
from sealroom.tlog.entries import Kind, decode_entry
from tests.client.test_attest_monitor import Stack
from tests.controlplane.conftest import Env
from tests.hostagent.test_agent import wait_for
from tests.runtime.test_service_e2e import _roots, sim_policy, sim_policy_doc, write_spec

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # only complete lines: the service may be writing the next one
    return [json.loads(x) for x in path.read_text().split("\n")[:-1] if x.strip()]


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_service_heartbeats_in_the_log(
    live: tuple[Env, str],
    make_env: Callable[..., Env],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env, url = live
    home = tmp_path / "home"
    monkeypatch.setenv("SEALROOM_HOME", str(home))
    spec = write_spec(tmp_path, 1)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(sim_policy_doc()))
    beats = tmp_path / "beats.jsonl"
    cmd = [sys.executable, "-m", "sealroom.cli.main", "service", "run", "--spec", str(spec)]
    cmd += ["--attest-every", "1", "--policy", str(policy), "--heartbeats", str(beats)]
    cmd += ["--log", url, "--json"]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "SEALROOM_HOME": str(home), "SEALROOM_API_KEY": env.admin_key},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        # the deployment is logged before any traffic: spec, keys, the heartbeat signer
        kind, dep = decode_entry(env.cp.tlog.entry(info["deployment_log_index"]))
        assert kind == Kind.SERVICE_DEPLOYMENT
        assert dep["spec_hash"] == info["spec_hash"] and dep["simulated"] is True
        assert dep["heartbeat_signer"] == info["heartbeat_key"]
        wait_for(lambda: len(_lines(beats)) >= 3, "three logged heartbeats", tries=2400)
        lines = _lines(beats)
        for line in lines:  # each heartbeat is the log's entry at its index, as it is
            kind, logged = decode_entry(env.cp.tlog.entry(line["log_index"]))
            assert kind == Kind.HEARTBEAT
            assert logged == {"signer": info["heartbeat_key"], "heartbeat": line["heartbeat"]}

        vkey = env.cp.tlog.vkey()
        base = ["service", "verify", info["url"], "--policy", str(policy)]
        hb = ["--heartbeat-key", info["heartbeat_key"]]

        def verify(path: Path, *extra: str, key: str = vkey) -> tuple[int, str, str]:
            argv = [*base, "--heartbeats", str(path), *hb, "--log", url, "--log-key", key]
            rc = run([*argv, *extra, "--json"])
            out = capsys.readouterr()
            return rc, out.out, out.err

        rc, out, err = verify(beats, "--max-age", "3600")
        assert rc == 0, err
        shown = json.loads(out)["heartbeats"]
        assert shown["latest_ok"] and shown["log"]["tree_size"] > shown["log"]["index"]
        assert shown["age_seconds"] < 3600

        # another log's key: its checkpoint does not verify
        other = make_env().cp.tlog.vkey()
        rc, _, err = verify(beats, key=other)
        assert rc == 2 and json.loads(err)["error"].startswith("tlog-"), err

        # a log index that names another entry (the deployment), and no index at all
        moved = [*lines[:-1], {**lines[-1], "log_index": info["deployment_log_index"]}]
        rc, _, err = verify(_write(tmp_path / "moved.jsonl", moved))
        assert rc == 2 and json.loads(err)["error"] == "heartbeat-not-logged", err
        unlogged = [*lines[:-1], {k: v for k, v in lines[-1].items() if k != "log_index"}]
        rc, _, err = verify(_write(tmp_path / "unlogged.jsonl", unlogged))
        assert rc == 2 and json.loads(err)["error"] == "heartbeat-not-logged", err

        # a host serving an old copy of the file (its tail cut): on its own, the latest
        # heartbeat it shows is older than the period, so --max-age below the period
        # refuses it; with the log, the newer logged heartbeats supersede the file
        old = _write(tmp_path / "old.jsonl", lines[:2])
        wait_for(lambda: len(_lines(beats)) >= 4, "a fourth heartbeat", tries=2400)
        rc = run([*base, "--heartbeats", str(old), *hb, "--max-age", "0.5", "--json"])
        err = capsys.readouterr().err
        assert rc == 2 and json.loads(err)["error"] == "heartbeat-lapsed", err
        rc, out, err = verify(old)
        shown = json.loads(out)["heartbeats"]
        assert rc == 0 and shown["behind_log"] and shown["log"]["index"] > lines[1]["log_index"]
    finally:
        proc.terminate()
        proc.wait(60)


def test_service_run_with_a_dead_log_does_not_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = write_spec(tmp_path, 1)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(sim_policy_doc()))
    cmd = [sys.executable, "-m", "sealroom.cli.main", "service", "run", "--spec", str(spec)]
    cmd += ["--attest-every", "1", "--policy", str(policy)]
    cmd += ["--log", f"http://127.0.0.1:{free_port()}", "--json"]
    r = subprocess.run(
        cmd,
        env={**os.environ, "SEALROOM_HOME": str(home), "SEALROOM_API_KEY": "k"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 3, r.stderr  # unavailable: no deployment entry, no service
    assert r.stdout == ""
    assert json.loads(r.stderr.strip().splitlines()[-1])["error"] == "control-plane-unreachable"


def test_log_needs_attest_every(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEALROOM_HOME", str(tmp_path / "home"))
    spec = write_spec(tmp_path, 1)
    rc = run(["service", "run", "--spec", str(spec), "--log", "http://127.0.0.1:1"])
    assert rc == 1 and "--attest-every" in capsys.readouterr().err
    rc = run(["service", "verify", "https://127.0.0.1:1", "--policy", str(spec), "--max-age", "1"])
    assert rc == 1 and "--heartbeat-key" in capsys.readouterr().err
    verify = ["service", "verify", "https://127.0.0.1:1", "--policy", str(spec)]
    rc = run([*verify, "--heartbeat-key", "00" * 32])
    assert rc == 1 and "--heartbeats FILE or --log URL" in capsys.readouterr().err
    rc = run([*verify, "--log", "http://127.0.0.1:1", "--log-key", "k", "--heartbeat-key", "0"])
    assert rc != 0
    rc = run([*verify, "--heartbeats", str(spec)])
    assert rc == 1 and "--heartbeat-key" in capsys.readouterr().err


def test_the_log_catches_a_withheld_failing_heartbeat(
    live: tuple[Env, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A host serves its heartbeat file without the failing tail: the log, searched after
    the file's latest entry, has the newer failed heartbeat, and verify refuses. Without a
    file, verify finds the signer's newest heartbeat in the log itself."""
    env, url = live
    home = tmp_path / "home"
    monkeypatch.setenv("SEALROOM_HOME", str(home))
    stack = Stack(home, tmp_path)
    try:
        sink = HeartbeatSink(
            Ed25519PrivateKey.generate(), tmp_path / "beats.jsonl", LogClient(url, env.admin_key)
        )
        m = AttestationMonitor(
            ServiceClient(stack.private.endpoint, sim_policy(), extra_roots=_roots(home)),
            sink.signer,
            period=3600.0,
            publish=sink.publish,
            on_heartbeat=sink.write,
        )
        m.beat()
        m.beat()
        good_only = _write(tmp_path / "good.jsonl", _lines(tmp_path / "beats.jsonl"))
        policy = tmp_path / "policy.json"
        policy.write_text(json.dumps(sim_policy_doc()))
        vkey = env.cp.tlog.vkey()
        base = ["service", "verify", stack.private.endpoint, "--policy", str(policy)]
        base += ["--heartbeat-key", sink.key_hex, "--log", url, "--log-key", vkey, "--json"]

        def verify(*extra: str) -> tuple[int, dict[str, Any]]:
            rc = run([*base, *extra])
            out = capsys.readouterr()
            return rc, json.loads(out.out if rc == 0 else out.err)

        rc, doc = verify()  # no file: the newest heartbeat of this signer, from the log
        assert rc == 0, doc
        assert doc["heartbeats"]["latest_ok"] and doc["heartbeats"]["log"]["index"] >= 1
        curl = ["service", "curl", stack.private.endpoint, "/x", "--policy", str(policy)]
        curl += base[5:-1]  # the same heartbeat demands: key, log, log key
        assert run(curl) == 0
        assert capsys.readouterr().out == "hello /x world"

        # someone with the admin key appends an entry naming the signer, unsigned by it:
        # it is no heartbeat of this signer and changes nothing
        forged = {"signer": sink.key_hex, "heartbeat": {"payload": {}}}
        LogClient(url, env.admin_key).append("heartbeat", forged)
        rc, doc = verify("--heartbeats", str(good_only))
        assert rc == 0 and not doc["heartbeats"].get("behind_log"), doc

        m.client.policy = sim_policy(snp={"measurements": ["00" * 48]})
        assert not m.beat()["payload"]["ok"]  # logged, and in the full file
        rc, doc = verify("--heartbeats", str(good_only))  # the file without its tail
        assert rc == 2 and doc["error"] == "heartbeat-untrusted", doc
        assert "policy-violation" in doc["message"]
        rc, doc = verify()  # from the log alone
        assert rc == 2 and doc["error"] == "heartbeat-untrusted", doc
        assert run(curl) == 2  # a client refuses to talk to it: nothing sent, nothing read
        out = capsys.readouterr()
        assert out.out == "" and "heartbeat-untrusted" in out.err

        # more entries after the file's latest than --scan: no verdict without reading them
        rc, doc = verify("--heartbeats", str(good_only), "--scan", "1")
        assert rc == 2 and doc["error"] == "heartbeat-scan-limit", doc
        # a signer with no heartbeat in the log at all
        other = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
        rc = run([*base[:5], "--heartbeat-key", other, *base[7:]])
        assert rc == 2 and json.loads(capsys.readouterr().err)["error"] == "heartbeat-not-logged"
    finally:
        sink.close()
        stack.close()


def test_sigusr1_re_attests_on_demand(tmp_path: Path) -> None:
    """`kill -USR1` makes `service run` and `service watch` re-attest now: with a period of
    an hour, a second heartbeat can only come from the signal."""
    home = tmp_path / "home"
    env = {**os.environ, "SEALROOM_HOME": str(home)}
    spec = write_spec(tmp_path, 1)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(sim_policy_doc()))
    beats, watched = tmp_path / "run.jsonl", tmp_path / "watch.jsonl"
    cli = [sys.executable, "-m", "sealroom.cli.main", "service"]
    run_cmd = [*cli, "run", "--spec", str(spec), "--attest-every", "3600"]
    run_cmd += ["--policy", str(policy), "--heartbeats", str(beats), "--json"]
    proc = subprocess.Popen(run_cmd, env=env, stdout=subprocess.PIPE, text=True)
    watch: subprocess.Popen[str] | None = None
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        wait_for(lambda: len(_lines(beats)) == 1, "the first heartbeat", tries=2400)
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: len(_lines(beats)) == 2, "the heartbeat on demand", tries=2400)
        assert _lines(beats)[1]["heartbeat"]["payload"]["ok"]

        watch_cmd = [*cli, "watch", info["url"], "--policy", str(policy), "--every", "3600"]
        watch_cmd += ["--count", "2", "--heartbeats", str(watched), "--json"]
        watch = subprocess.Popen(watch_cmd, env=env, stdout=subprocess.PIPE, text=True)
        wait_for(lambda: len(_lines(watched)) == 1, "the watcher's first heartbeat", tries=2400)
        watch.send_signal(signal.SIGUSR1)
        assert watch.wait(120) == 0
        assert [x["heartbeat"]["payload"]["ok"] for x in _lines(watched)] == [True, True]
    finally:
        for p in (watch, proc):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(60)
