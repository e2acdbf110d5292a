"""Issue 9, defect 1: what the algorithm prints (or otherwise chooses) never reaches a
client that did not attest and authenticate, nor the host: GET /events, /status and
/receipt answer any TLS client, so they carry public lifecycle facts only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from sealroom.hostagent.launcher import launch_local
from sealroom.hostagent.relay import TcpToUnixRelay
from tests.runtime.test_enclave_e2e import (
    Parties,
    anonymous_conn,
    client,
    home,
    make_manifest,
    parties,
    run_to_end,
    write_inputs,
)
from tests.runtime.test_runtime_unix_outbox import sockdir

__all__ = ["home", "parties", "sockdir"]  # fixtures shared with the other modules

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)

SECRET = "SECRET-7f3a9c"
# Prints the secret on both streams, names a result after it, then fails in a way the
# algorithm chose (exit status 42): none of it may be public.
LEAKY = f"""\
import os, pathlib, sys
a = pathlib.Path('/inputs/a').read_text()
print('{SECRET}-stdout-' + a, flush=True)
print('{SECRET}-stderr-' + a, file=sys.stderr, flush=True)
pathlib.Path('/results/{SECRET}.txt').write_text(a)
sys.exit(42)
""".encode()
# Succeeds, but leaves a symbolic link named after the secret: the archiver refuses it,
# and its message (naming the file) must stay out of the public reason.
LINKER = f"""\
import os, pathlib
print('{SECRET}-ok', flush=True)
os.symlink('/etc/passwd', '/results/{SECRET}-link')
""".encode()


def _anonymous_get(endpoint: str, path: str) -> tuple[int, bytes]:
    conn = anonymous_conn(endpoint)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _public_views(endpoint: str) -> str:
    got = []
    for path in ("/events?after=0", "/status", "/receipt"):
        status, body = _anonymous_get(endpoint, path)
        assert status == 200, (path, status, body)
        got.append(body.decode())
    return "\n".join(got)


@pytest.mark.parametrize(
    ("name", "algorithm", "reason"),
    [
        ("exit-42", LEAKY, "the algorithm exited with a non-zero status"),
        ("symlink", LINKER, "results hold a link or special file (only files and directories)"),
    ],
)
def test_events_do_not_leak_algorithm_output_to_unauthenticated_client(
    tmp_path: Path,
    home: Path,
    parties: Parties,
    sockdir: Path,
    name: str,
    algorithm: bytes,
    reason: str,
) -> None:
    files = write_inputs(tmp_path, algorithm=algorithm)
    manifest = make_manifest(tmp_path, parties, files, mid=f"leak-{name}")
    sock = sockdir / "rt.sock"
    enc = launch_local(manifest, tee="sim", home=home, listen=f"unix:{sock}")
    try:
        with TcpToUnixRelay(sock) as relay:  # the host agent's relay, as the host runs it
            c = client(relay.endpoint, manifest, home)
            run_to_end(c, parties, files)
            anonymous = _public_views(relay.endpoint)
            # An attested party's view of the public endpoints is no richer.
            attested = json.dumps([[e.wire() for e in c.events(0)], c.status().wire(), c.receipt()])
    finally:
        enc.stop()
    host_lines = json.dumps(enc.lines)
    for where, text in (("anonymous", anonymous), ("attested", attested), ("host", host_lines)):
        assert SECRET not in text, f"{where} view leaks the algorithm's output: {text[:2000]}"
    receipt: dict[str, Any] = json.loads(anonymous.split("\n")[2])
    assert receipt["payload"]["exit"]["ok"] is False
    assert receipt["payload"]["exit"]["code"] is None  # the status it chose is sealed
    status = json.loads(anonymous.split("\n")[1])
    assert (status["state"], status["reason"]) == ("failed", reason)
    assert receipt["payload"]["exit"]["reason"] == reason
    assert set(status) == {"manifest_hash", "state", "reason", "slots", "limits"}
    events = json.loads(anonymous.split("\n")[0])["events"]
    assert "output" not in {e["type"] for e in events}
    assert {"upload_accepted", "run_started", "failed"} <= {e["type"] for e in events}
