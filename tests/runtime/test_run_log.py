"""Issue 9, defect 2: a failed run is no black box. The algorithm's stdout/stderr (bounded,
with a visible marker where cut) is sealed to every consumer and to the manifest's
log_readers; every run that started ends with a signed receipt, a failed one too."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from sealroom.crypto.keys import PartyKeys
from sealroom.crypto.sealing import open_bytes
from sealroom.errors import AccessDeniedError, AttestationError, RunFailedError
from sealroom.hostagent.launcher import launch_local
from sealroom.hostagent.relay import TcpToUnixRelay
from sealroom.protocol.enclave import log_info
from tests.runtime.test_enclave_e2e import (
    Parties,
    client,
    home,
    make_manifest,
    parties,
    run_to_end,
    write_inputs,
)
from tests.runtime.test_runtime_unix_outbox import sockdir
from tests.runtime.test_storage_wipe import needs_bwrap

__all__ = ["home", "parties", "sockdir"]

pytestmark = needs_bwrap

FAILING = b"""\
import pathlib, sys
a = pathlib.Path('/inputs/a').read_text()
print('read dataset a: ' + a, flush=True)
print('about to divide', file=sys.stderr, flush=True)
1 / 0
"""
CHATTY = b"""\
import pathlib, sys
sys.stdout.write('x' * 200000)
sys.stdout.flush()
pathlib.Path('/results/answer.txt').write_text('done')
"""


def with_log_reader(manifest: Path, reader: PartyKeys) -> Path:
    doc = json.loads(manifest.read_text())
    doc["log_readers"] = [reader.public.to_json_obj()]
    manifest.write_text(json.dumps(doc))
    return manifest


def _wait_for(pred: Any, what: str) -> None:
    deadline = time.monotonic() + 60  # a bound for a stuck runtime, not a speed check
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_failed_run_has_signed_receipt_and_sealed_log(
    tmp_path: Path, home: Path, parties: Parties, sockdir: Path
) -> None:
    files = write_inputs(tmp_path, algorithm=FAILING)
    manifest = with_log_reader(
        make_manifest(tmp_path, parties, files, mid="fail-log"), parties.algo
    )
    outbox = tmp_path / "outbox"
    sock = sockdir / "rt.sock"
    enc = launch_local(manifest, tee="sim", home=home, listen=f"unix:{sock}", outbox=outbox)
    try:
        with TcpToUnixRelay(sock) as relay:
            c = client(relay.endpoint, manifest, home)
            run_to_end(c, parties, files)
            # The receipt is signed, verifies offline, says the run failed and why (in
            # public words) and lists a sealed log for the consumer and the log reader.
            receipt = c.verified_receipt()
            assert not receipt.ok
            assert receipt.payload["exit"] == {
                "ok": False,
                "code": None,
                "reason": "the algorithm exited with a non-zero status",
            }
            assert set(receipt.payload["logs"]) == {"alice", "algo"}
            assert receipt.payload["results"] == {}
            for reader in (parties.alice, parties.algo):
                _, log = c.fetch_log(reader)
                assert not log.ok and log.detail == "exit 1"
                assert "read dataset a: 20" in log.text
                assert [s for s, _ in log.entries] == ["stdout", "stderr"]  # as they came
                assert log.entries[1][1].startswith("about to divide\n")
                assert "ZeroDivisionError" in log.text and not log.truncated
            # Nobody else: a data provider the manifest does not name, an outsider.
            for other in (parties.dp1, parties.mallory):
                with pytest.raises(AccessDeniedError):
                    c.fetch_log(other)
            # The consumer asking for its result learns that the run failed, with the log.
            with pytest.raises(RunFailedError) as e:
                c.fetch_result(parties.alice, tmp_path / "out")
            assert e.value.message == "failed: the algorithm exited with a non-zero status"
            assert e.value.exit_code == 5 and e.value.code == "run-failed"
            assert "about to divide" in e.value.log.text
            assert not (tmp_path / "out").exists()
            _wait_for(lambda: (outbox / "DONE").exists(), "DONE in the outbox")
    finally:
        enc.stop()
    # The host holds the receipt and one sealed log per reader: ciphertext only.
    names = sorted(p.name for p in outbox.iterdir())
    assert names == ["DONE", "log.algo.sealed", "log.alice.sealed", "receipt.json"]
    stored = json.loads((outbox / "receipt.json").read_text())
    assert stored["payload"] == receipt.payload
    mh = bytes.fromhex(receipt.payload["manifest_hash"])
    for name in ("alice", "algo"):
        blob = (outbox / f"log.{name}.sealed").read_bytes()
        assert hashlib.sha256(blob).hexdigest() == receipt.payload["logs"][name]["sha256"]
        assert b"about to divide" not in blob and b"dataset a" not in blob
    # One reader's log does not open with another's key, nor as another reader's log.
    with pytest.raises(AttestationError):
        open_bytes(
            (outbox / "log.alice.sealed").read_bytes(),
            parties.algo.x25519,
            info=log_info(mh, "alice"),
        )
    with pytest.raises(AttestationError):
        open_bytes(
            (outbox / "log.alice.sealed").read_bytes(),
            parties.alice.x25519,
            info=log_info(mh, "algo"),
        )
    # Nothing the algorithm printed reached the host's lines.
    assert "about to divide" not in json.dumps(enc.lines)


def test_run_log_is_bounded_with_a_visible_marker(
    tmp_path: Path, home: Path, parties: Parties
) -> None:
    files = write_inputs(tmp_path, algorithm=CHATTY)
    manifest = make_manifest(tmp_path, parties, files, mid="chatty")
    enc = launch_local(manifest, tee="sim", home=home)
    try:
        c = client(enc.url, manifest, home)
        run_to_end(c, parties, files)
        receipt = c.fetch_result(parties.alice, tmp_path / "out")
        assert receipt.ok  # a completed run has a sealed log too
        _, log = c.fetch_log(parties.alice)
    finally:
        enc.stop()
    assert log.ok and log.truncated
    assert log.entries[-1][0] == "sealroom"
    assert "output truncated after 65536 bytes" in log.entries[-1][1]
    assert log.entries[0] == ("stdout", "x" * 65536)
