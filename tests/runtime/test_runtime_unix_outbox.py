"""The runtime on a Unix socket (relayed to TCP by the host agent's relay), its outbox,
and its host-visible stdout lines: state changes and allow-listed events, never output."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealroom.hostagent.launcher import launch_local
from sealroom.hostagent.relay import TcpToUnixRelay
from sealroom.runtime.computation import public_event
from tests.runtime.test_enclave_e2e import (
    Parties,
    client,
    home,
    make_manifest,
    parties,
    run_to_end,
    write_inputs,
)

__all__ = ["home", "parties"]  # fixtures shared with the e2e module

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)

SECRET_PRINT = b"""\
import pathlib
a = int(pathlib.Path('/inputs/a').read_text())
b = int(pathlib.Path('/inputs/b').read_text())
print('SECRET-OUTPUT-%d' % (a * 1000 + b), flush=True)
pathlib.Path('/results/answer.txt').write_text(str(a + b))
"""


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="sr-rt-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _wait_for(pred: Any, what: str, tries: int = 400) -> None:
    for _ in range(tries):
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_unix_socket_outbox_and_host_visible_lines(
    tmp_path: Path, home: Path, parties: Parties, sockdir: Path
) -> None:
    files = write_inputs(tmp_path, algorithm=SECRET_PRINT)
    manifest = make_manifest(tmp_path, parties, files, mid="unix-outbox")
    sock = sockdir / "rt.sock"
    outbox = tmp_path / "outbox"
    enc = launch_local(manifest, tee="sim", home=home, listen=f"unix:{sock}", outbox=outbox)
    try:
        assert enc.url == f"unix:{sock}"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        with TcpToUnixRelay(sock) as relay:
            c = client(relay.endpoint, manifest, home)
            assert c.attest().simulated  # attested TLS end to end through the relay
            run_to_end(c, parties, files)
            _wait_for(lambda: (outbox / "DONE").exists(), "DONE in the outbox")
            names = sorted(p.name for p in outbox.iterdir())
            assert names == ["DONE", "log.alice.sealed", "receipt.json", "result.alice.sealed"]
            assert json.loads((outbox / "receipt.json").read_text()) == c.receipt()
            sealed = (outbox / "result.alice.sealed").read_bytes()
            receipt = c.verify_receipt(c.receipt())
            assert (
                hashlib.sha256(sealed).hexdigest() == receipt.payload["results"]["alice"]["sha256"]
            )
            assert b"SECRET-OUTPUT" not in sealed  # ciphertext only
            out = tmp_path / "out"
            c.fetch_result(parties.alice, out)
            assert (out / "answer.txt").read_text() == "42"
            # Not an event, even for an attested party (it is sealed into the run log)...
            assert "SECRET-OUTPUT" not in json.dumps([e.wire() for e in c.events(0)])
            _wait_for(
                lambda: any(ln.get("state") == "completed" for ln in enc.lines),
                "the completed state line",
            )
    finally:
        enc.stop()
    # ...and never on the host-visible stdout lines.
    text = json.dumps(enc.lines)
    assert "SECRET-OUTPUT" not in text and "20022" not in text
    states = [ln["state"] for ln in enc.lines if ln.get("event") == "state"]
    assert states[:3] == ["awaiting_inputs", "running", "completed"]
    events = [ln for ln in enc.lines if ln.get("event") == "enclave_event"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert {"upload_accepted", "run_started", "completed"} <= {e["type"] for e in events}
    assert all(set(e) == {"event", "seq", "type", "message"} for e in events)
    assert not sock.exists()  # removed at shutdown


def test_failed_run_leaves_receipt_and_done_without_results(
    tmp_path: Path, home: Path, parties: Parties, sockdir: Path
) -> None:
    files = write_inputs(tmp_path, algorithm=b"raise SystemExit(3)\n")
    manifest = make_manifest(tmp_path, parties, files, mid="unix-fail")
    outbox = tmp_path / "outbox"
    sock = sockdir / "rt.sock"
    enc = launch_local(manifest, tee="sim", home=home, listen=f"unix:{sock}", outbox=outbox)
    try:
        with TcpToUnixRelay(sock) as relay:
            run_to_end(client(relay.endpoint, manifest, home), parties, files)
            _wait_for(lambda: (outbox / "DONE").exists(), "DONE in the outbox")
        assert sorted(p.name for p in outbox.iterdir()) == [
            "DONE",
            "log.alice.sealed",
            "receipt.json",
        ]
        _wait_for(lambda: any(ln.get("state") == "failed" for ln in enc.lines), "failed line")
    finally:
        enc.stop()


def test_stopped_before_inputs_writes_no_outbox(
    tmp_path: Path, home: Path, parties: Parties, sockdir: Path
) -> None:
    files = write_inputs(tmp_path)
    manifest = make_manifest(tmp_path, parties, files, mid="unix-stop")
    outbox = tmp_path / "outbox"
    enc = launch_local(
        manifest, tee="sim", home=home, listen=f"unix:{sockdir / 'rt.sock'}", outbox=outbox
    )
    enc.stop()
    assert not outbox.exists() or not any(outbox.iterdir())


def test_public_event_drops_output_and_hides_rejected_upload_details() -> None:
    assert (
        public_event({"seq": 3, "type": "output", "message": "secret", "stream": "stdout"}) is None
    )
    view = public_event(
        {
            "seq": 4,
            "type": "upload_rejected",
            "message": "slot 'a': received data hashes to abcd, the manifest says ef",
            "slot": "a",
            "code": "upload-hash-mismatch",
        }
    )
    assert view == {
        "seq": 4,
        "type": "upload_rejected",
        "message": "slot 'a': upload rejected (upload-hash-mismatch)",
        "slot": "a",
        "code": "upload-hash-mismatch",
    }
    assert public_event({"seq": 1, "type": "unknown-kind", "message": "x"}) is None


def test_unix_socket_path_too_long_is_a_clear_error(
    tmp_path: Path, home: Path, parties: Parties
) -> None:
    files = write_inputs(tmp_path)
    manifest = make_manifest(tmp_path, parties, files, mid="unix-long")
    from sealroom.errors import UnavailableError

    with pytest.raises(UnavailableError, match="too long"):
        launch_local(manifest, tee="sim", home=home, listen="unix:/tmp/" + "x" * 120 + ".sock")
