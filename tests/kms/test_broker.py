"""The KMS behind a real key broker: a guest speaking Trustee's KBS protocol (the kbs
guest client, sim SNP evidence, real sockets) gets a KMS key version; lockdown refuses
sessions attested before it; revoked versions are refused; everything is audited."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealroom.attestation.ear import VerifierKey
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.kbs.client import KbsClient, KbsRefused, envelope_evidence, report_data
from sealroom.kbs.server import create_app, hash_admin_key
from sealroom.kbs.store import SqlResourceStore, Store
from sealroom.kbs.verify import Verifier
from sealroom.kms import KeyManager, Lockdowns, Scope
from sealroom.kms.audit import verify_log
from sealroom.kms.broker import KmsBroker
from sealroom.kms.lockdown import lockdown_order
from tests.kbs.conftest import MEASUREMENT, SIM_POLICY, Clock, Kbs, serve

HOST_DATA = hashlib.sha256(b"manifest").digest()

POLICY = f"""version: 1
id: kms-release
rules:
  - resources: "kms/ds1/*"
    status: warning
    allow_simulated: true
    kinds: [snp]
    claims:
      host_data: ["{HOST_DATA.hex()}"]
"""


@dataclass
class Env:
    kbs: Kbs
    km: KeyManager
    admin: Ed25519PrivateKey

    def guest(self, host_data: bytes = HOST_DATA) -> KbsClient:
        authority = self.kbs.authority

        def evidence(digest: bytes) -> object:
            rep = authority.report(
                measurement=MEASUREMENT, report_data=report_data(digest), host_data=host_data
            )
            return envelope_evidence(EvidenceBundle.single(authority.evidence(rep)))

        return KbsClient(self.kbs.url, "snp", evidence)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    admin = Ed25519PrivateKey.generate()
    pub = admin.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    km = KeyManager.init(tmp_path / "kms", admins={"root": pub.hex()})
    km.create("ds1", account="clinic", actor="t")
    authority = SimAuthority.ephemeral()
    clock = Clock()
    store = Store(f"sqlite:///{tmp_path / 'kbs.db'}")
    key = secrets.token_urlsafe(32)
    broker = KmsBroker(km, SqlResourceStore(store))
    app = create_app(
        store,
        Verifier(VerifierKey.generate(), extra_roots=(authority.root,), clock=clock),
        admin_key_hashes=[hash_admin_key(key)],
        resource_store=broker.store,
        guards=[broker.guard],
        audit=[broker.audit],
    )
    url, server, t = serve(app)
    kbs = Kbs(url, key, authority, clock, store)
    kbs.set_attestation_policy(SIM_POLICY)
    kbs.set_resource_policy(POLICY)
    yield Env(kbs, km, admin)
    server.should_exit = True
    t.join(timeout=30)
    store.close()


def test_guest_gets_primary_and_a_named_version(env: Env) -> None:
    _, v1 = env.km.material("ds1")
    env.km.rotate("ds1", actor="t")
    _, v2 = env.km.material("ds1")
    with env.guest() as g:
        assert g.get_resource("kms/ds1/primary") == v2
        assert g.get_resource("kms/ds1/v1") == v1
    releases = [e["event"] for e in env.km.audit.entries() if e["event"]["action"] == "release"]
    assert [(r["key_id"], r["version"]) for r in releases] == [("ds1", 2), ("ds1", 1)]
    assert releases[0]["policy"] == "kms-release"
    assert releases[0]["detail"]["facts"][0]["host_data"] == HOST_DATA.hex()
    verify_log(env.km.audit.path, env.km.audit.head())


def test_policy_bound_to_manifest_hash_refuses_other_computation(env: Env) -> None:
    with env.guest(host_data=bytes(32)) as g, pytest.raises(KbsRefused) as e:
        g.get_resource("kms/ds1/primary")
    assert e.value.status == 401
    refusal = env.km.audit.entries()[-1]["event"]
    assert refusal["action"] == "refusal" and "host_data" in refusal["detail"]["reason"]


def test_revoked_version_refused(env: Env) -> None:
    env.km.rotate("ds1", actor="t")
    env.km.revoke("ds1", 1, actor="t")
    with env.guest() as g:
        with pytest.raises(KbsRefused) as e:
            g.get_resource("kms/ds1/v1")
        assert "revoked" in str(e.value)
        g.get_resource("kms/ds1/primary")


def test_lockdown_refuses_a_session_attested_before_it(env: Env) -> None:
    with env.guest() as g:
        first = g.get_resource("kms/ds1/primary")
        result = Lockdowns(env.km).apply(lockdown_order(Scope(tee_kind="snp"), env.admin))
        assert result.revoked == ["ds1/v1"]
        # same session, same token: refused now
        with pytest.raises(KbsRefused) as e:
            g.get_resource("kms/ds1/primary")
        assert e.value.status == 401 and "lockdown" in str(e.value)
    # and a new session is refused as well; the key material changed anyway
    with env.guest() as g2, pytest.raises(KbsRefused):
        g2.get_resource("kms/ds1/primary")
    assert env.km.material("ds1")[1] != first
    actions = [e["event"]["action"] for e in env.km.audit.entries()]
    assert actions.count("refusal") == 2 and "lockdown" in actions


def test_admin_write_to_kms_resource_is_a_typed_refusal_not_a_500(env: Env) -> None:
    """Defect: an admin POST/DELETE of kms/... reached the KMS store's refusal as an
    unhandled exception, answered 500 Internal Server Error with a text body."""
    with env.kbs.admin() as c:
        for r in (
            c.post("/kbs/v0/resource/kms/ds1/primary", content=b"attacker key"),
            c.put("/kbs/v0/resource/kms/ds1/v1", content=b"attacker key"),
            c.delete("/kbs/v0/resource/kms/ds1/primary"),
        ):
            assert r.status_code == 401, r.text
            body = r.json()
            assert set(body) == {"type", "detail"}
            assert body["type"].endswith("/errors/PluginInternalError")
            assert body["detail"].startswith("kms-resource-read-only: kms/ds1/")
            assert "sealroom kms key" in body["detail"]
        # other repositories are still written and deleted through the KBS
        assert c.post("/kbs/v0/resource/default/key/x", content=b"v").status_code == 200
        assert c.delete("/kbs/v0/resource/default/key/x").status_code == 200
    with env.guest() as g:
        assert g.get_resource("kms/ds1/primary") == env.km.material("ds1")[1]
    assert [v.version for v in env.km.info("ds1").versions] == [1]
