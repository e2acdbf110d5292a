"""KBS-sourced datasets end to end (docs/adr/0027), real sockets and processes: the data
providers encrypt their files with `sealroom data encrypt` and go offline; their keys sit
in the KMS behind the key broker with a release policy bound to the manifest hash; the
enclave runtime (sim TEE) attests to the broker (Trustee KBS protocol), gets each key,
fetches the ciphertext (a local path, an http URL), decrypts it and checks the dataset
hash as for uploads. Every refusal fails the run with a reason any party can read."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sealroom.attestation.ear import VerifierKey
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.cli.main import app as cli_app
from sealroom.client.enclave import EnclaveClient
from sealroom.crypto.keys import PartyKeys, key_path
from sealroom.errors import AccessDeniedError
from sealroom.hostagent.launcher import runtime_measurement
from sealroom.kbs.server import create_app, hash_admin_key
from sealroom.kbs.store import SqlResourceStore, Store
from sealroom.kbs.verify import Verifier
from sealroom.kms import KeyManager, Lockdowns, Scope
from sealroom.kms.broker import KmsBroker
from sealroom.kms.lockdown import lockdown_order
from sealroom.manifest import Manifest
from sealroom.protocol.enclave import kbs_filled_message
from sealroom.testing.postgres import free_port
from tests.kbs.conftest import Clock, Kbs, serve
from tests.runtime.test_enclave_e2e import client, enclave_factory, home

__all__ = ["enclave_factory", "home"]  # pytest fixtures used here

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)

SUM_PY = b"""\
import pathlib
a = int(pathlib.Path('/inputs/a').read_text())
b = int(pathlib.Path('/inputs/b').read_text())
pathlib.Path('/results/answer.txt').write_text(str(a + b))
"""
A, B = b"20", b"22"


@dataclass
class Broker:
    kbs: Kbs
    km: KeyManager
    admin: PartyKeys
    kms_dir: Path

    def release_to(self, manifest_hash: str) -> None:
        """The providers' release policy: their keys go to this computation only."""
        self.kbs.set_resource_policy(
            f"""version: 1
id: datasets-for-one-computation
rules:
  - resources: "kms/ds-*/*"
    status: warning          # sim evidence is at best "warning" (AR4SI)
    allow_simulated: true
    kinds: [snp]
    claims:
      host_data: ["{manifest_hash}"]
"""
        )


@pytest.fixture
def broker(tmp_path: Path, home: Path) -> Iterator[Broker]:
    # The KMS admin is a party key in this home (`sealroom kms lockdown --as admin`).
    admin = PartyKeys.generate("admin")
    admin.save(key_path("admin"))
    kms_dir = tmp_path / "kms"
    km = KeyManager.init(kms_dir, admins={"admin": admin.public.ed25519.hex()})
    for key_id in ("ds-a", "ds-b"):
        km.create(key_id, account="clinics", actor="clinic")
    # The broker trusts this machine's sim authority (the one the enclave's sim TEE uses).
    authority = SimAuthority.load_or_create(home / "sim-authority")
    store = Store(f"sqlite:///{tmp_path / 'kbs.db'}")
    admin_key = secrets.token_urlsafe(32)
    kms = KmsBroker(km, SqlResourceStore(store))
    app = create_app(
        store,
        Verifier(VerifierKey.generate(), extra_roots=(authority.root,)),
        admin_key_hashes=[hash_admin_key(admin_key)],
        resource_store=kms.store,
        guards=[kms.guard],
        audit=[kms.audit],
    )
    url, server, t = serve(app)
    kbs = Kbs(url, admin_key, authority, Clock(), store)
    kbs.set_attestation_policy(
        f"""version: 1
id: sealroom-enclave
allow_simulated: true
snp:
  measurements: ['{runtime_measurement().hex()}']
"""
    )
    yield Broker(kbs, km, admin, kms_dir)
    server.should_exit = True
    t.join(timeout=30)
    store.close()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def blob_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Somewhere the ciphertext can live that is not the provider's machine: http."""
    root = tmp_path / "blobs"
    root.mkdir()
    handler = functools.partial(_QuietFiles, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def encrypt(kms_dir: Path, plain: Path, key_id: str, out: Path) -> str:
    """`sealroom data encrypt` as the provider runs it; returns the sha256 it prints."""
    args = ["data", "encrypt", str(plain), "--key-id", key_id, "--out", str(out)]
    r = CliRunner().invoke(cli_app, [*args, "--data-dir", str(kms_dir)])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("sha256 "))
    return line.split()[1]


@dataclass
class Setup:
    manifest: Path
    algo: PartyKeys
    alice: PartyKeys
    dp1: PartyKeys
    files: Path


@pytest.fixture
def setup(tmp_path: Path, broker: Broker, blob_server: tuple[str, Path]) -> Callable[..., Setup]:
    def make(
        *, a_sha256: str | None = None, a_resource: str = "kms/ds-a/v1", mid: str = "kbs"
    ) -> Setup:
        files = tmp_path / f"files-{mid}"
        files.mkdir()
        (files / "main.py").write_bytes(SUM_PY)
        (files / "a.txt").write_bytes(A)
        (files / "b.txt").write_bytes(B)
        blob_url, blob_dir = blob_server
        sha_a = encrypt(broker.kms_dir, files / "a.txt", "ds-a", files / "a.txt.enc")
        sha_b = encrypt(broker.kms_dir, files / "b.txt", "ds-b", blob_dir / f"{mid}-b.enc")
        assert sha_a == hashlib.sha256(A).hexdigest()
        p = [PartyKeys.generate(n) for n in ("algo", "dp1", "dp2", "alice")]
        algo, dp1, dp2, alice = p
        doc: dict[str, Any] = {
            "version": 1,
            "id": mid,
            "name": "sum of two numbers nobody uploads",
            "algorithm": {
                "kind": "python",
                "sha256": hashlib.sha256(SUM_PY).hexdigest(),
                "provider": algo.public.to_json_obj(),
                "entrypoint": "main.py",
                "args": [],
            },
            "datasets": [
                {
                    "name": "a",
                    "sha256": a_sha256 or sha_a,
                    "provider": dp1.public.to_json_obj(),
                    "max_size": 1024,
                    "source": {
                        "kbs": {
                            "url": broker.kbs.url,
                            "resource": a_resource,
                            "ciphertext": str(files / "a.txt.enc"),
                        }
                    },
                },
                {
                    "name": "b",
                    "sha256": sha_b,
                    "provider": dp2.public.to_json_obj(),
                    "max_size": 1024,
                    "source": {
                        "kbs": {
                            "url": broker.kbs.url,
                            "resource": "kms/ds-b/primary",
                            "ciphertext": f"{blob_url}/{mid}-b.enc",
                        }
                    },
                },
            ],
            "consumers": [alice.public.to_json_obj()],
            "policy": {
                "version": 1,
                "allow_simulated": True,
                "require": ["snp"],
                "snp": {"measurements": [runtime_measurement().hex()], "vmpl": [0]},
            },
            "limits": {
                "vcpus": 1,
                "memory_mb": 256,
                "wall_seconds": 30,
                "max_result_bytes": 1 << 20,
            },
        }
        path = tmp_path / f"manifest-{mid}.json"
        path.write_text(json.dumps(doc, indent=2))
        return Setup(path, algo, alice, dp1, files)

    return make


def wait_for(c: EnclaveClient, done: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + 120  # a bound for a stuck runtime, not a speed check
    while time.monotonic() < deadline:
        st = c.status()
        if done(st):
            return st
        time.sleep(0.1)
    raise AssertionError(f"enclave stuck: {c.status()}")


def test_kbs_sourced_datasets_complete_with_data_providers_offline(
    tmp_path: Path, home: Path, broker: Broker, setup: Callable[..., Setup], enclave_factory: Any
) -> None:
    s = setup()
    manifest = Manifest.load(s.manifest)
    broker.release_to(manifest.manifest_hash.hex())
    assert manifest.slots()[1].kbs is not None
    enc = enclave_factory(s.manifest)
    c = client(enc.url, s.manifest, home)
    assert c.attest().simulated
    # Both dataset slots fill with nobody uploading them.
    st = wait_for(c, lambda st: st.slots["a"] == st.slots["b"] == "filled" or st.state.final)
    assert st.slots == {"algorithm": "empty", "a": "filled", "b": "filled"}, st
    # A party cannot upload into a KBS-sourced slot.
    with pytest.raises(AccessDeniedError) as e:
        c.upload("a", s.files / "a.txt", s.dp1)
    assert e.value.code == "slot-kbs-sourced"
    c.upload("algorithm", s.files / "main.py", s.algo)
    st = wait_for(c, lambda st: st.state.final)
    assert st.state.value == "completed", st.reason
    out = tmp_path / "out"
    receipt = c.fetch_result(s.alice, out)
    assert (out / "answer.txt").read_text() == "42"
    assert receipt.ok and receipt.payload["datasets"] == {
        "a": hashlib.sha256(A).hexdigest(),
        "b": hashlib.sha256(B).hexdigest(),
    }
    events = [(e.type, e.message) for e in c.events(0)]
    # public events say which slot filled from which key, nothing of the data
    assert [m for t, m in events if t == "kbs_filled"] == [
        kbs_filled_message("a", len(A), "kms/ds-a/v1"),
        kbs_filled_message("b", len(B), "kms/ds-b/primary"),
    ]
    # The KMS audit names each release with the enclave's HOST_DATA = the manifest hash.
    releases = [e["event"] for e in broker.km.audit.entries() if e["event"]["action"] == "release"]
    assert sorted((r["key_id"], r["version"]) for r in releases) == [("ds-a", 1), ("ds-b", 1)]
    assert {r["detail"]["facts"][0]["host_data"] for r in releases} == {
        manifest.manifest_hash.hex()
    }


def _nothing_else(b: Broker, s: Setup) -> None:
    pass


def _policy_bound_to_another_computation(b: Broker, s: Setup) -> None:
    b.release_to("00" * 32)


def _revoked_key_version(b: Broker, s: Setup) -> None:
    b.km.rotate("ds-a", actor="clinic")
    b.km.revoke("ds-a", 1, actor="clinic", reason="leaked")


def _lockdown_in_scope(b: Broker, s: Setup) -> None:
    Lockdowns(b.km).apply(lockdown_order(Scope(tee_kind="snp"), b.admin.ed25519, reason="drill"))


@pytest.mark.parametrize(
    ("case", "manifest_args", "reason"),
    [
        (_nothing_else, {"a_sha256": hashlib.sha256(b"21").hexdigest()}, "does not hash to"),
        (_policy_bound_to_another_computation, {}, "PolicyDeny"),
        (_revoked_key_version, {}, "ds-a v1: revoked"),
        (_lockdown_in_scope, {}, "lockdown"),
        (_nothing_else, {"a_resource": "kms/ds-b/v1"}, "encrypted under key ds-a v1"),
    ],
    ids=[
        "wrong_dataset_hash",
        "policy_refusal",
        "revoked_key_version",
        "lockdown_in_scope",
        "resource_names_another_key",
    ],
)
def test_kbs_sourced_dataset_refused_fails_the_run_with_a_readable_reason(
    home: Path,
    broker: Broker,
    setup: Callable[..., Setup],
    enclave_factory: Any,
    case: Callable[[Broker, Setup], None],
    manifest_args: dict[str, str],
    reason: str,
) -> None:
    s = setup(**manifest_args)
    broker.release_to(Manifest.load(s.manifest).manifest_hash.hex())
    case(broker, s)
    enc = enclave_factory(s.manifest)
    c = client(enc.url, s.manifest, home)
    st = wait_for(c, lambda st: st.state.final)
    assert st.state.value == "failed"
    assert st.reason.startswith("dataset 'a' from the key broker: ") and reason in st.reason
    assert st.slots["a"] == "empty"
    failed = [e for e in c.events(0) if e.type == "kbs_fill_failed"]
    assert len(failed) == 1 and failed[0].slot == "a"
    # Nothing of the dataset stays in enclave storage, and nothing runs afterwards.
    with pytest.raises(AccessDeniedError):
        c.upload("a", s.files / "a.txt", s.dp1)
