"""End to end on real sockets: a runtime process with the sim TEE, three parties and a
consumer, through the party client (the same code the CLI uses)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sealroom.attestation.sim.authority import SimAuthority
from sealroom.client.enclave import EnclaveClient
from sealroom.crypto.keys import PartyKeys
from sealroom.crypto.signing import upload_message
from sealroom.errors import (
    AccessDeniedError,
    AttestationError,
    InvalidInputError,
    PolicyViolationError,
    RunFailedError,
)
from sealroom.hostagent.launcher import LocalEnclave, launch_local, runtime_measurement
from sealroom.manifest import Manifest
from sealroom.protocol.enclave import H_SHA256, H_SIGNATURE

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)

SUM_PY = b"""\
import pathlib
a = int(pathlib.Path('/inputs/a').read_text())
b = int(pathlib.Path('/inputs/b').read_text())
pathlib.Path('/results/answer.txt').write_text(str(a + b))
print('summed', flush=True)
"""


@dataclass
class Parties:
    algo: PartyKeys
    dp1: PartyKeys
    dp2: PartyKeys
    alice: PartyKeys
    mallory: PartyKeys


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("SEALROOM_HOME", str(h))
    return h


@pytest.fixture
def parties() -> Parties:
    return Parties(*(PartyKeys.generate(n) for n in ("algo", "dp1", "dp2", "alice", "mallory")))


def _pub(k: PartyKeys) -> dict[str, str]:
    return k.public.to_json_obj()


def write_inputs(tmp: Path, algorithm: bytes = SUM_PY, a: bytes = b"20", b: bytes = b"22") -> Path:
    d = tmp / "inputs"
    d.mkdir(exist_ok=True)
    (d / "main.py").write_bytes(algorithm)
    (d / "a.txt").write_bytes(a)
    (d / "b.txt").write_bytes(b)
    return d


def make_manifest(
    tmp: Path,
    p: Parties,
    files: Path,
    *,
    kind: str = "python",
    entrypoint: str | None = "main.py",
    wall: int = 30,
    mid: str = "e2e",
    policy: dict[str, Any] | None = None,
    alg_file: str = "main.py",
) -> Path:
    def h(name: str) -> str:
        return hashlib.sha256((files / name).read_bytes()).hexdigest()

    doc = {
        "version": 1,
        "id": mid,
        "name": "sum of two private numbers",
        "algorithm": {
            "kind": kind,
            "sha256": h(alg_file),
            "provider": _pub(p.algo),
            "entrypoint": entrypoint,
            "args": [],
        },
        "datasets": [
            {"name": "a", "sha256": h("a.txt"), "provider": _pub(p.dp1), "max_size": 1024},
            {"name": "b", "sha256": h("b.txt"), "provider": _pub(p.dp2), "max_size": 1024},
        ],
        "consumers": [_pub(p.alice)],
        "policy": policy
        or {
            "version": 1,
            "allow_simulated": True,
            "require": ["snp"],
            "snp": {"measurements": [runtime_measurement().hex()], "vmpl": [0]},
        },
        "limits": {"vcpus": 1, "memory_mb": 256, "wall_seconds": wall, "max_result_bytes": 1 << 20},
    }
    path = tmp / f"manifest-{mid}.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.fixture
def enclave_factory(home: Path) -> Iterator[Any]:
    started: list[LocalEnclave] = []

    def start(manifest: Path) -> LocalEnclave:
        enc = launch_local(manifest, tee="sim", home=home)
        started.append(enc)
        return enc

    yield start
    for enc in started:
        enc.stop()


def client(url: str, manifest: Path, home: Path) -> EnclaveClient:
    root = SimAuthority.load_or_create(home / "sim-authority").root
    return EnclaveClient(url, Manifest.load(manifest), extra_roots=(root,))


def run_to_end(c: EnclaveClient, p: Parties, files: Path, alg_file: str = "main.py") -> None:
    c.attest()
    c.upload("algorithm", files / alg_file, p.algo)
    c.upload("a", files / "a.txt", p.dp1)
    c.upload("b", files / "b.txt", p.dp2)
    seq = 0
    deadline = time.monotonic() + 180  # a bound for a stuck runtime, not a speed check
    while time.monotonic() < deadline:
        for ev in c.events(seq, wait=5):
            seq = ev.seq
            if ev.type in ("completed", "failed"):
                return
    raise AssertionError("run did not finish")


def test_three_parties_sum_and_receipt(
    tmp_path: Path, home: Path, parties: Parties, enclave_factory: Any
) -> None:
    files = write_inputs(tmp_path)
    manifest = make_manifest(tmp_path, parties, files)
    enc = enclave_factory(manifest)
    c = client(enc.url, manifest, home)
    attested = c.attest()
    assert attested.simulated  # the sim TEE says so, and the policy had to allow it
    run_to_end(c, parties, files)
    out = tmp_path / "out"
    receipt = c.fetch_result(parties.alice, out)
    assert (out / "answer.txt").read_text() == "42"
    assert receipt.ok and receipt.simulated
    assert receipt.payload["datasets"] == {
        "a": hashlib.sha256(b"20").hexdigest(),
        "b": hashlib.sha256(b"22").hexdigest(),
    }
    # Offline: the receipt verifies from the file alone, and fails when tampered.
    doc = c.receipt()
    again = c.verify_receipt(json.loads(json.dumps(doc)))
    assert again.payload == receipt.payload
    doc["payload"]["exit"]["reason"] = "ok (edited)"
    with pytest.raises(AttestationError):
        c.verify_receipt(doc)
    events = [e.type for e in c.events(0)]
    assert events.count("upload_accepted") == 3 and "completed" in events
    # What the algorithm printed is not an event (it is sealed into the run log).
    assert not any("summed" in e.model_dump_json() for e in c.events(0))


def test_sim_evidence_rejected_by_policy_without_allow_simulated(
    tmp_path: Path, home: Path, parties: Parties, enclave_factory: Any
) -> None:
    files = write_inputs(tmp_path)
    manifest = make_manifest(tmp_path, parties, files)
    enc = enclave_factory(manifest)
    c = client(enc.url, manifest, home)
    strict = make_manifest(
        tmp_path,
        parties,
        files,
        policy={"version": 1, "snp": {"measurements": [runtime_measurement().hex()]}},
        mid="e2e",
    )
    c.policy = Manifest.load(strict).policy()
    with pytest.raises(PolicyViolationError) as e:
        c.attest()
    assert [r.field for r in e.value.result.failures()] == ["simulated"]


def test_wrong_manifest_is_refused(
    tmp_path: Path, home: Path, parties: Parties, enclave_factory: Any
) -> None:
    files = write_inputs(tmp_path)
    enc = enclave_factory(make_manifest(tmp_path, parties, files, mid="one"))
    other = make_manifest(tmp_path, parties, files, mid="two")
    with pytest.raises(AttestationError, match="not ours"):
        client(enc.url, other, home).attest()


def anonymous_conn(url: str) -> http.client.HTTPSConnection:
    """A TLS client that verified nothing and presents nothing (host, operator, anyone)."""
    host, port = url.removeprefix("https://").split(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)


def _raw_put(url: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    conn = anonymous_conn(url)
    try:
        conn.putrequest("PUT", path)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        try:
            conn.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _truncated_put(url: str, path: str, headers: dict[str, str], body: bytes) -> None:
    conn = anonymous_conn(url)
    conn.putrequest("PUT", path)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(body)
    conn.close()


def test_upload_negatives(
    tmp_path: Path, home: Path, parties: Parties, enclave_factory: Any
) -> None:
    files = write_inputs(tmp_path)
    m1 = make_manifest(tmp_path, parties, files, mid="m1")
    m2 = make_manifest(tmp_path, parties, files, mid="m2")
    e1, e2 = enclave_factory(m1), enclave_factory(m1)  # same computation, two enclaves
    c1, c2 = client(e1.url, m1, home), client(e2.url, m1, home)
    a1, a2 = c1.attest(), c2.attest()
    mh = Manifest.load(m1).manifest_hash
    data = b"20"
    sha = hashlib.sha256(data).digest()

    def put(
        enclave: Any,
        slot: str,
        sig: bytes,
        body: bytes = data,
        size: int | None = None,
        claimed: bytes = sha,
    ) -> tuple[int, Any]:
        return _raw_put(
            enclave.url,
            f"/slots/{slot}",
            {
                "Content-Length": str(len(body) if size is None else size),
                H_SHA256: claimed.hex(),
                H_SIGNATURE: sig.hex(),
            },
            body,
        )

    good_for_e1 = parties.dp1.sign(upload_message(mh, "a", sha, 2, a1.keys.digest))
    # replayed to another enclave of the same computation
    status, body = put(e2, "a", good_for_e1)
    assert (status, body["type"]) == (403, "upload-signature-invalid")
    # replayed to another slot (b has another provider and hash: signature names slot a)
    sig_b = parties.dp1.sign(upload_message(mh, "b", sha, 2, a1.keys.digest))
    status, body = put(e1, "b", sig_b, claimed=hashlib.sha256(b"22").digest(), body=b"22")
    assert status == 403
    # made for another computation
    mh2 = Manifest.load(m2).manifest_hash
    status, _ = put(e1, "a", parties.dp1.sign(upload_message(mh2, "a", sha, 2, a1.keys.digest)))
    assert status == 403
    # wrong signer
    status, _ = put(e1, "a", parties.dp2.sign(upload_message(mh, "a", sha, 2, a1.keys.digest)))
    assert status == 403
    # hash mismatch: signed and claimed for the manifest's hash, but other bytes sent
    status, body = put(e1, "a", good_for_e1, body=b"99")
    assert (status, body["type"]) == (422, "upload-hash-mismatch")
    # truncated: announces 2 bytes, sends 1 and goes away
    _truncated_put(
        e1.url,
        "/slots/a",
        {"Content-Length": "2", H_SHA256: sha.hex(), H_SIGNATURE: good_for_e1.hex()},
        b"2",
    )
    for _ in range(50):
        if any(ev.code == "upload-truncated" for ev in c1.events(0)):
            break
        c1.events(len(c1.events(0)), wait=0.2)
    assert any(ev.code == "upload-truncated" for ev in c1.events(0))
    # oversize: over the manifest's max_size (1024), refused from the headers
    status, body = put(e1, "a", good_for_e1, body=b"x" * 10, size=5000)
    assert (status, body["type"]) == (400, "upload-too-large")
    # unknown slot
    status, body = put(e1, "nope", good_for_e1)
    assert status == 404
    # nothing was kept: slot a is still empty and accepts the genuine upload once
    assert c1.status().slots["a"] == "empty"
    assert c1.upload("a", files / "a.txt", parties.dp1).size == 2
    with pytest.raises(Exception, match="already filled"):
        c1.upload("a", files / "a.txt", parties.dp1)
    assert c2.status().slots["a"] == "empty"
    assert a2.keys.digest != a1.keys.digest


def test_result_only_for_consumers(
    tmp_path: Path, home: Path, parties: Parties, enclave_factory: Any
) -> None:
    files = write_inputs(tmp_path)
    manifest = make_manifest(tmp_path, parties, files)
    enc = enclave_factory(manifest)
    c = client(enc.url, manifest, home)
    run_to_end(c, parties, files)
    with pytest.raises(AccessDeniedError):
        c.fetch_result(parties.mallory, tmp_path / "stolen")
    # mallory renamed as alice: signature does not verify with alice's key
    impostor = PartyKeys("alice", parties.mallory.ed25519, parties.mallory.x25519)
    with pytest.raises(AccessDeniedError):
        c.fetch_result(impostor, tmp_path / "stolen2")
    assert not (tmp_path / "stolen").exists() and not (tmp_path / "stolen2").exists()


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        (
            "socket",
            "import socket\ns=socket.socket(); s.settimeout(2)\ns.connect(('127.0.0.1', 9))\n",
            "exit",
        ),
        ("host-file", "print(open('/etc/shadow').read())\n", "exit"),
        ("escape-write", "open('/inputs/evil', 'w').write('x')\n", "exit"),
        ("time", "import time\ntime.sleep(120)\n", "wall time"),
        ("memory", "x = bytearray(1 << 30)\nprint(len(x))\n", "memory"),
        ("fork-bomb", "import os\nwhile True:\n    os.fork()\n", ""),
    ],
)
def test_hostile_algorithm_contained_and_reported(
    tmp_path: Path,
    home: Path,
    parties: Parties,
    enclave_factory: Any,
    name: str,
    code: str,
    reason: str,
) -> None:
    files = write_inputs(tmp_path, algorithm=code.encode())
    manifest = make_manifest(tmp_path, parties, files, wall=3, mid=f"hostile-{name}")
    enc = enclave_factory(manifest)
    c = client(enc.url, manifest, home)
    run_to_end(c, parties, files)
    receipt = c.verify_receipt(c.receipt())
    assert not receipt.ok
    assert reason in receipt.payload["exit"]["reason"]
    assert receipt.payload["results"] == {}
    with pytest.raises(RunFailedError, match=r"^failed: "):
        c.fetch_result(parties.alice, tmp_path / "out")


def test_wasm_algorithm(tmp_path: Path, home: Path, parties: Parties, enclave_factory: Any) -> None:
    """A WASI module copies dataset a into its results (inputs at fd 3, results at fd 4)."""
    import wasmtime

    from tests.runtime.test_sandbox import WASM_COPY

    wat = WASM_COPY.replace('"numbers.txt"', '"a"').replace('"copy.txt"', '"answer.txt"')
    wat = wat.replace("(i32.const 0) (i32.const 11)", "(i32.const 0) (i32.const 1)")
    wat = wat.replace("(i32.const 16) (i32.const 8)", "(i32.const 16) (i32.const 10)")
    files = write_inputs(tmp_path, a=b"the answer is 42\n")
    (files / "module.wasm").write_bytes(wasmtime.wat2wasm(wat))
    manifest = make_manifest(
        tmp_path, parties, files, kind="wasm", entrypoint=None, alg_file="module.wasm", mid="wasm"
    )
    enc = enclave_factory(manifest)
    c = client(enc.url, manifest, home)
    run_to_end(c, parties, files, alg_file="module.wasm")
    receipt = c.fetch_result(parties.alice, tmp_path / "out")
    assert receipt.ok
    assert (tmp_path / "out" / "answer.txt").read_text() == "the answer is 42\n"


def test_zip_slip_dataset_refused_and_nothing_kept(
    tmp_path: Path, home: Path, parties: Parties, enclave_factory: Any
) -> None:
    import zipfile

    files = write_inputs(tmp_path)
    with zipfile.ZipFile(files / "evil.zip", "w") as z:
        z.writestr("../../algorithm/main.py", "print('owned')")
    doc = json.loads(make_manifest(tmp_path, parties, files, mid="zip").read_text())
    doc["datasets"][0].update(
        sha256=hashlib.sha256((files / "evil.zip").read_bytes()).hexdigest(), archive="zip"
    )
    manifest = tmp_path / "manifest-zip2.json"
    manifest.write_text(json.dumps(doc))
    enc = enclave_factory(manifest)
    c = client(enc.url, manifest, home)
    c.attest()
    with pytest.raises(InvalidInputError, match=r"\.\."):
        c.upload("a", files / "evil.zip", parties.dp1)
    assert c.status().slots["a"] == "empty"


def test_enclave_storage_wiped_on_exit(tmp_path: Path, home: Path, parties: Parties) -> None:
    files = write_inputs(tmp_path)
    manifest = make_manifest(tmp_path, parties, files, mid="wipe")
    base = tmp_path / "enclave-storage"
    enc = launch_local(manifest, tee="sim", home=home, workdir=base)
    try:
        c = client(enc.url, manifest, home)
        run_to_end(c, parties, files)
        assert any(base.iterdir())  # inputs, sealed results, events while it runs
    finally:
        enc.stop()
    assert list(base.iterdir()) == []


def test_bad_manifest_file_is_a_clear_error(tmp_path: Path, home: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text('{"version": 1}')
    with pytest.raises(InvalidInputError):
        launch_local(bad, tee="sim", home=home)


def test_large_upload_negatives_on_the_pipelined_path(
    tmp_path: Path, home: Path, parties: Parties, enclave_factory: Any
) -> None:
    """Uploads larger than one receive buffer go through the two-thread receiver (ADR
    0038): a wrong last byte, a body that stops one byte short and an oversize body are
    refused exactly as small ones are, and nothing is kept."""
    from sealroom.runtime import ingest

    big = os.urandom(ingest.BUFFER * ingest.DEPTH * 2 + 4321)
    files = write_inputs(tmp_path, a=big)
    path = make_manifest(tmp_path, parties, files, mid="big")
    doc = json.loads(path.read_text())
    doc["datasets"][0]["max_size"] = len(big)
    path.write_text(json.dumps(doc))
    enc = enclave_factory(path)
    c = client(enc.url, path, home)
    att = c.attest()
    sha = hashlib.sha256(big).digest()
    sig = parties.dp1.sign(
        upload_message(Manifest.load(path).manifest_hash, "a", sha, len(big), att.keys.digest)
    )
    headers = {"Content-Length": str(len(big)), H_SHA256: sha.hex(), H_SIGNATURE: sig.hex()}
    # hash mismatch in the very last chunk
    status, body = _raw_put(enc.url, "/slots/a", headers, big[:-1] + bytes([big[-1] ^ 1]))
    assert (status, body["type"]) == (422, "upload-hash-mismatch")
    # truncated by one byte, the connection then closed
    _truncated_put(enc.url, "/slots/a", headers, big[:-1])
    for _ in range(50):
        if any(ev.code == "upload-truncated" for ev in c.events(0)):
            break
        c.events(len(c.events(0)), wait=0.2)
    assert any(ev.code == "upload-truncated" for ev in c.events(0))
    # oversize: one byte over max_size, refused from the headers before any byte is read
    status, body = _raw_put(
        enc.url, "/slots/a", {**headers, "Content-Length": str(len(big) + 1)}, big + b"x"
    )
    assert (status, body["type"]) == (400, "upload-too-large")
    assert c.status().slots["a"] == "empty"
    # the genuine upload is accepted once, whole
    assert c.upload("a", files / "a.txt", parties.dp1).size == len(big)
    assert c.status().slots["a"] == "filled"
