"""The attestation service over real sockets: challenge, verify, EAR against JWKS, nonces
single-use across replicas (two app instances over one database), policies and
reference values, a real SNP vector with its pinned time, and `attest verify --service`."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from sealroom.attestation.ear import VerifierKey, verify_ear
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.cli.main import app as cli
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    PolicyViolationError,
    UnauthenticatedError,
)
from sealroom.kbs.as_client import challenge, verify_remote
from sealroom.kbs.attestation_service import create_attestation_app
from sealroom.kbs.server import hash_admin_key
from sealroom.kbs.store import Store
from sealroom.kbs.verify import Verifier
from sealroom.testing.postgres import pg_bindir, throwaway_cluster
from tests.kbs.conftest import MEASUREMENT, Clock, serve

NONCE_POLICY = f"""version: 1
id: as-sim
allow_simulated: true
snp:
  measurements: ['{MEASUREMENT.hex()}']
  report_data: {{mode: nonce, require_nonce: true}}
"""


@dataclass
class Replica:
    url: str
    server: uvicorn.Server


@dataclass
class Service:
    replicas: list[Replica]
    admin_key: str
    key: VerifierKey
    authority: SimAuthority
    clock: Clock

    @property
    def url(self) -> str:
        return self.replicas[0].url

    def admin(self, url: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=url or self.url,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=30,
        )

    def put_policy(self, pid: str, text: str) -> None:
        with self.admin() as c:
            r = c.put(f"/api/v1/attestation/policies/{pid}", content=text)
            assert r.status_code == 204, r.text

    def evidence(self, report_data: bytes, measurement: bytes = MEASUREMENT) -> EvidenceBundle:
        rep = self.authority.report(measurement=measurement, report_data=report_data)
        return EvidenceBundle.single(self.authority.evidence(rep))


def _service(db_url: str, replicas: int = 2) -> Iterator[Service]:
    authority = SimAuthority.ephemeral()
    key = VerifierKey.generate()  # replicas share the service key
    admin = secrets.token_urlsafe(24)
    clock = Clock()
    stores, reps = [], []
    for _ in range(replicas):
        store = Store(db_url)
        stores.append(store)
        app = create_attestation_app(
            store,
            Verifier(key, extra_roots=(authority.root,), clock=clock),
            admin_key_hashes=[hash_admin_key(admin)],
        )
        url, server, _t = serve(app)
        reps.append(Replica(url, server))
    svc = Service(reps, admin, key, authority, clock)
    svc.put_policy("sim", NONCE_POLICY)
    yield svc
    for r in reps:
        r.server.should_exit = True
    for s in stores:
        s.close()


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    yield from _service(f"sqlite:///{tmp_path / 'as.db'}")


def _verify(
    url: str, bundle: EvidenceBundle, nonce: bytes | None, pid: str = "sim"
) -> httpx.Response:
    body: dict[str, object] = {"evidence": json.loads(bundle.to_json()), "policy_id": pid}
    if nonce is not None:
        body["nonce"] = base64.b64encode(nonce).decode()
    return httpx.post(f"{url}/api/v1/attestation/verify", json=body, timeout=60)


def test_challenge_verify_ear_against_jwks(svc: Service) -> None:
    nonce = challenge(svc.url)
    r = _verify(svc.url, svc.evidence(nonce + bytes(32)), nonce)
    assert r.status_code == 200, r.text
    jwks = httpx.get(f"{svc.url}/.well-known/jwks.json").json()
    tok = verify_ear(r.json()["ear"], jwks, now=svc.clock(), expected_nonce=nonce)
    assert tok.submods["cpu0"].status.value == "warning"  # SIMULATED hardware
    assert tok.simulated("cpu0")
    assert r.json()["appraisal"]["policy_id"] == "as-sim"


def test_policy_update_seen_by_every_replica_despite_parse_cache(svc: Service) -> None:
    """Stored policies are parsed once per text (kbs.verify.parse_policy): a replaced
    policy takes effect at once, on the replica that stored it and on the other one."""
    nonce = challenge(svc.url)
    assert _verify(svc.url, svc.evidence(nonce + bytes(32)), nonce).json()["ok"] is True
    svc.put_policy("sim", NONCE_POLICY.replace(MEASUREMENT.hex(), "00" * 48))
    for rep in svc.replicas:
        nonce = challenge(rep.url)
        r = _verify(rep.url, svc.evidence(nonce + bytes(32)), nonce)
        assert r.status_code == 200 and r.json()["ok"] is False, r.text


def test_nonce_is_single_use(svc: Service) -> None:
    nonce = challenge(svc.url)
    assert _verify(svc.url, svc.evidence(nonce + bytes(32)), nonce).status_code == 200
    r = _verify(svc.url, svc.evidence(nonce + bytes(32)), nonce)
    assert r.status_code == 401 and r.json()["type"] == "nonce-invalid"


def test_nonce_not_issued_by_service_refused(svc: Service) -> None:
    nonce = secrets.token_bytes(32)
    r = _verify(svc.url, svc.evidence(nonce + bytes(32)), nonce)
    assert r.status_code == 401 and r.json()["type"] == "nonce-invalid"


def test_expired_nonce_refused(svc: Service) -> None:
    nonce = challenge(svc.url)
    svc.clock.offset = timedelta(minutes=6)
    r = _verify(svc.url, svc.evidence(nonce + bytes(32)), nonce)
    assert r.status_code == 401 and r.json()["type"] == "nonce-invalid"


def test_nonce_consumed_on_one_replica_refused_on_the_other(svc: Service) -> None:
    a, b = svc.replicas[0].url, svc.replicas[1].url
    nonce = challenge(a)
    assert _verify(b, svc.evidence(nonce + bytes(32)), nonce).status_code == 200
    assert _verify(a, svc.evidence(nonce + bytes(32)), nonce).status_code == 401


@pytest.mark.skipif(pg_bindir() is None, reason="PostgreSQL binaries not installed")
def test_replicas_over_postgresql_share_nonces_and_policies() -> None:
    with throwaway_cluster() as pg:
        gen = _service(pg.create_db())
        svc = next(gen)
        try:
            a, b = svc.replicas[0].url, svc.replicas[1].url
            nonces = [challenge(a) for _ in range(3)]
            for n in nonces:
                assert _verify(b, svc.evidence(n + bytes(32)), n).status_code == 200
                assert _verify(a, svc.evidence(n + bytes(32)), n).status_code == 401
        finally:
            for _ in gen:
                pass


def test_evidence_bound_to_another_nonce_is_contraindicated(svc: Service) -> None:
    nonce = challenge(svc.url)
    r = _verify(svc.url, svc.evidence(bytes(64)), nonce)
    assert r.status_code == 200 and r.json()["ok"] is False
    jwks = httpx.get(f"{svc.url}/.well-known/jwks.json").json()
    tok = verify_ear(r.json()["ear"], jwks, now=svc.clock(), expected_nonce=nonce)
    assert tok.status.value == "contraindicated"


def test_unknown_policy_404_and_admin_required(svc: Service) -> None:
    r = _verify(svc.url, svc.evidence(bytes(64)), None, pid="nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = httpx.put(f"{svc.url}/api/v1/attestation/policies/x", content=NONCE_POLICY)
    assert r.status_code == 401
    r = httpx.get(f"{svc.url}/api/v1/attestation/policies/sim")
    assert r.status_code == 401
    with svc.admin() as c:
        assert c.get("/api/v1/attestation/policies/sim").text == NONCE_POLICY
        assert c.get("/api/v1/attestation/policies").json() == ["sim"]
        bad = c.put("/api/v1/attestation/policies/bad", content="version: 1\nnosuchkind: {}\n")
        assert bad.status_code == 400


def test_reference_values_with_expiry(svc: Service) -> None:
    with svc.admin() as c:
        r = c.put(
            "/api/v1/attestation/reference-values/snp.measurement",
            json={
                "value": {"allowed": [MEASUREMENT.hex()]},
                "expires": (svc.clock() + timedelta(hours=1)).isoformat(),
            },
        )
        assert r.status_code == 204
        assert c.get("/api/v1/attestation/reference-values/snp.measurement").json() == {
            "allowed": [MEASUREMENT.hex()]
        }
    nonce = challenge(svc.url)
    assert _verify(svc.url, svc.evidence(nonce + bytes(32)), nonce).json()["ok"] is True
    svc.clock.offset = timedelta(hours=2)
    nonce = challenge(svc.url)
    r = _verify(svc.url, svc.evidence(nonce + bytes(32)), nonce)
    assert r.json()["ok"] is False
    assert "reference value expired" in json.dumps(r.json()["appraisal"]["submods"])
    with svc.admin() as c:
        assert c.get("/api/v1/attestation/reference-values/snp.measurement").status_code == 404


def test_real_snp_vector_with_pinned_time(vectors: Path, svc: Service) -> None:
    """Trustee's AS end-to-end SNP evidence (JSON), verified at its pinned time."""
    evidence = (vectors / "amd/genoa_trustee_e2e/snp_evidence.json").read_bytes()
    svc.clock.offset = datetime(2025, 6, 1, tzinfo=UTC) - datetime.now(UTC)
    from sealroom.attestation.snp.kind import KIND as SNP

    meas = SNP.inspect(SNP.load(evidence).items[0]).to_dict()["measurement"]
    svc.put_policy("real", f"version: 1\nid: real\nsnp:\n  measurements: ['{meas}']\n")
    r = httpx.post(
        f"{svc.url}/api/v1/attestation/verify",
        json={
            "evidence_b64": base64.b64encode(evidence).decode(),
            "kind": "snp",
            "policy_id": "real",
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    jwks = httpx.get(f"{svc.url}/.well-known/jwks.json").json()
    tok = verify_ear(r.json()["ear"], jwks, now=svc.clock())
    assert not tok.simulated("cpu0")
    assert tok.claims["submods"]["cpu0"]["sealroom.claims"]["product"] == "Genoa"


def test_remote_verdict_needs_the_pinned_key(svc: Service) -> None:
    nonce = challenge(svc.url)
    jwks = httpx.get(f"{svc.url}/.well-known/jwks.json").content
    v = verify_remote(
        svc.url, svc.evidence(nonce + bytes(32)), "sim", jwks, now=svc.clock(), nonce=nonce
    )
    assert v.ok
    other = json.dumps(VerifierKey.generate().jwks()).encode()
    nonce = challenge(svc.url)
    with pytest.raises(AttestationError) as ei:
        verify_remote(
            svc.url, svc.evidence(nonce + bytes(32)), "sim", other, now=svc.clock(), nonce=nonce
        )
    assert "key" in str(ei.value).lower()
    with pytest.raises(UnauthenticatedError):
        verify_remote(
            svc.url, svc.evidence(nonce + bytes(32)), "sim", jwks, now=svc.clock(), nonce=nonce
        )


def test_cli_attest_verify_service(svc: Service, tmp_path: Path) -> None:
    runner = CliRunner()
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(httpx.get(f"{svc.url}/.well-known/jwks.json").content)
    r = runner.invoke(cli, ["attest", "challenge", "--service", svc.url])
    assert r.exit_code == 0, r.output
    nonce = bytes.fromhex(r.output.strip())
    ev = tmp_path / "ev.json"
    ev.write_text(svc.evidence(nonce + bytes(32)).to_json())
    args = ["attest", "verify", str(ev), "--service", svc.url, "--policy-id", "sim"]
    r = runner.invoke(cli, [*args, "--service-jwks", str(jwks), "--nonce", nonce.hex()])
    assert r.exit_code == 0, r.output
    assert "verified against the pinned JWKS" in r.output and "SIMULATED" in r.output
    r = runner.invoke(cli, [*args, "--nonce", nonce.hex()])
    assert isinstance(r.exception, InvalidInputError) and "pinned" in str(r.exception)
    nonce2 = challenge(svc.url)
    ev.write_text(svc.evidence(bytes(64)).to_json())
    r = runner.invoke(cli, [*args, "--service-jwks", str(jwks), "--nonce", nonce2.hex()])
    assert isinstance(r.exception, PolicyViolationError)  # exit 4 through sealroom's main


def test_unknown_policy_does_not_spend_the_nonce(svc: Service) -> None:
    """Policy, reference values and the nonce are read and spent in one transaction: a
    request naming no stored policy is refused before the nonce is spent, and a spent nonce
    stays spent on every replica."""
    nonce = challenge(svc.url)
    r = _verify(svc.url, svc.evidence(nonce + bytes(32)), nonce, pid="nope")
    assert r.status_code == 404 and r.json()["type"] == "policy-not-found"
    r = _verify(svc.replicas[1].url, svc.evidence(nonce + bytes(32)), nonce)
    assert r.status_code == 200 and r.json()["ok"] is True
    for rep in svc.replicas:
        r = _verify(rep.url, svc.evidence(nonce + bytes(32)), nonce)
        assert r.status_code == 401 and r.json()["type"] == "nonce-invalid"


def test_reference_value_update_seen_at_once_by_the_other_replica(svc: Service) -> None:
    """Nothing read per request is cached across requests: a reference value stored through
    one replica decides the very next appraisal on the other."""
    a, b = svc.replicas[0].url, svc.replicas[1].url
    nonce = challenge(a)
    assert _verify(b, svc.evidence(nonce + bytes(32)), nonce).json()["ok"] is True
    with svc.admin(a) as c:
        r = c.put(
            "/api/v1/attestation/reference-values/snp.measurement",
            json={"value": {"allowed": ["00" * 48]}},
        )
        assert r.status_code == 204, r.text
    nonce = challenge(b)
    r = _verify(b, svc.evidence(nonce + bytes(32)), nonce)
    assert r.status_code == 200 and r.json()["ok"] is False
    assert "reference.measurement" in json.dumps(r.json()["appraisal"]["submods"])
