"""The RCAR flow over a real socket: the guest client against the KBS, and every refusal."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sealroom.attestation.ear import verify_ear
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.kbs.client import KbsClient, KbsNotFound, KbsRefused, envelope_evidence, report_data
from sealroom.kbs.jwe import TeeKeyPair, decrypt_like_guest
from sealroom.kbs.protocol import (
    ERROR_TYPE_PREFIX,
    SESSION_COOKIE,
    JweResponse,
    runtime_data_digest,
)
from tests.kbs.conftest import MEASUREMENT, REAL_ONLY_POLICY, Kbs


def _err(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"type", "detail"}, body
    assert body["type"].startswith(ERROR_TYPE_PREFIX + "/")
    return str(body["type"].rsplit("/", 1)[1])


def _handshake(
    kbs: Kbs, http: httpx.Client, key: TeeKeyPair, *, tamper: str = ""
) -> tuple[httpx.Response, str]:
    r = http.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "extra-params": ""})
    assert r.status_code == 200, r.text
    nonce = r.json()["nonce"]
    assert len(base64.b64decode(nonce)) == 32 and r.json()["extra-params"] == ""
    sid = r.cookies[SESSION_COOKIE]
    pub = key.public()
    bound_nonce = nonce + "x" if tamper == "binding" else nonce
    digest = runtime_data_digest(bound_nonce, pub)
    rep = kbs.authority.report(measurement=MEASUREMENT, report_data=report_data(digest))
    body: dict[str, Any] = {
        "runtime-data": {
            "nonce": nonce if tamper != "nonce" else base64.b64encode(bytes(32)).decode(),
            "tee-pubkey": pub.members(),
        },
        "tee-evidence": {
            "primary_evidence": envelope_evidence(
                EvidenceBundle.single(kbs.authority.evidence(rep))
            ),
            "additional_evidence": "",
        },
    }
    r = http.post("/kbs/v0/attest", json=body, headers={"Cookie": f"{SESSION_COOKIE}={sid}"})
    return r, sid


def test_guest_client_gets_resource_and_token_verifies_against_jwks(kbs: Kbs) -> None:
    with KbsClient(kbs.url, "snp", kbs.evidence()) as c:
        token = c.attest()
        assert c.get_resource("default/key/one") == b"the released secret"
    jwks = httpx.get(f"{kbs.url}/.well-known/jwks.json").json()
    tok = verify_ear(token, jwks, now=kbs.clock())
    assert tok.simulated("cpu0")
    assert tok.claims["tee-pubkey"]["kty"] == "EC"
    assert [e.outcome for e in kbs.audit] == ["released"]
    assert kbs.guard_calls and str(kbs.guard_calls[0].path) == "default/key/one"


@pytest.mark.parametrize("alg", ["ECDH-ES+A256KW-P256", "ECDH-ES+A256KW-P521", "RSA-OAEP-256"])
def test_every_tee_key_algorithm_round_trips(kbs: Kbs, alg: str) -> None:
    with KbsClient(kbs.url, "snp", kbs.evidence(), key_algorithm=alg) as c:
        assert c.get_resource("default/key/one") == b"the released secret"


def test_wrong_protocol_version_refused_with_trustee_error(kbs: Kbs) -> None:
    for version in ("0.3.0", "0.1.1", "1.0.0", "0.4.0-rc1", "0.4", "x"):
        r = httpx.post(
            f"{kbs.url}/kbs/v0/auth", json={"version": version, "tee": "snp", "extra-params": ""}
        )
        assert r.status_code == 401 and _err(r) == "AttestationError", version
        assert "Version Mismatch" in r.json()["detail"] or "deserialize" in r.json()["detail"]
    with pytest.raises(KbsRefused) as ei:
        KbsClient(kbs.url, "snp", kbs.evidence(), version="0.3.0").attest()
    assert ei.value.status == 401 and ei.value.variant == "AttestationError"


def test_missing_cookie_refused(kbs: Kbs) -> None:
    r = httpx.post(f"{kbs.url}/kbs/v0/attest", json={})
    assert r.status_code == 401 and _err(r) == "AttestationError"
    assert "cookie not found" in r.json()["detail"]
    r = httpx.get(f"{kbs.url}/kbs/v0/resource/default/key/one")
    assert r.status_code == 401 and _err(r) == "TokenNotFound"


def test_unknown_cookie_refused(kbs: Kbs) -> None:
    r = httpx.get(
        f"{kbs.url}/kbs/v0/resource/default/key/one",
        headers={"Cookie": f"{SESSION_COOKIE}=deadbeef"},
    )
    assert r.status_code == 401 and _err(r) == "TokenNotFound"


def test_expired_session_refused_at_attest_and_at_resource(kbs: Kbs) -> None:
    with httpx.Client(base_url=kbs.url) as http:
        kbs.clock.offset = timedelta(0)
        r = http.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "extra-params": ""})
        sid = r.cookies[SESSION_COOKIE]
        kbs.clock.offset = timedelta(minutes=6)  # Trustee's default session is 5 minutes
        r = http.post("/kbs/v0/attest", json={}, headers={"Cookie": f"{SESSION_COOKIE}={sid}"})
        assert r.status_code == 401
    kbs.clock.offset = timedelta(0)
    c = KbsClient(kbs.url, "snp", kbs.evidence())
    c.attest()
    kbs.clock.offset = timedelta(minutes=6)
    with pytest.raises(KbsRefused) as ei:
        c.get_resource("default/key/one")
    # the session is gone and its EAR expired too: no token left to present
    assert ei.value.variant == "TokenNotFound"


def test_nonce_mismatch_refused(kbs: Kbs) -> None:
    with httpx.Client(base_url=kbs.url) as http:
        r, _ = _handshake(kbs, http, TeeKeyPair.generate(), tamper="nonce")
    assert r.status_code == 401 and _err(r) == "AttestationError"
    assert "nonce in the handshake session is different" in r.json()["detail"]


def test_report_data_binding_mismatch_refused(kbs: Kbs) -> None:
    with httpx.Client(base_url=kbs.url) as http:
        r, _ = _handshake(kbs, http, TeeKeyPair.generate(), tamper="binding")
    assert r.status_code == 401 and _err(r) == "AttestationError"
    assert "kbs.REPORT_DATA" in r.json()["detail"]


def test_tee_pubkey_swapped_after_binding_refused(kbs: Kbs) -> None:
    """Evidence bound to one key, Attestation naming another: the KBS recomputes the
    digest from what it will encrypt to, so the swap fails the binding."""
    bound, sent = TeeKeyPair.generate(), TeeKeyPair.generate()
    with httpx.Client(base_url=kbs.url) as http:
        r = http.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "extra-params": ""})
        nonce, sid = r.json()["nonce"], r.cookies[SESSION_COOKIE]
        rep = kbs.authority.report(
            measurement=MEASUREMENT,
            report_data=report_data(runtime_data_digest(nonce, bound.public())),
        )
        body = {
            "runtime-data": {"nonce": nonce, "tee-pubkey": sent.public().members()},
            "tee-evidence": {
                "primary_evidence": envelope_evidence(
                    EvidenceBundle.single(kbs.authority.evidence(rep))
                ),
                "additional_evidence": "",
            },
        }
        r = http.post("/kbs/v0/attest", json=body, headers={"Cookie": f"{SESSION_COOKIE}={sid}"})
    assert r.status_code == 401 and "kbs.REPORT_DATA" in r.json()["detail"]


def test_sim_evidence_refused_by_attestation_policy_without_allow_simulated(kbs: Kbs) -> None:
    kbs.set_attestation_policy(REAL_ONLY_POLICY)
    with pytest.raises(KbsRefused) as ei:
        KbsClient(kbs.url, "snp", kbs.evidence()).attest()
    assert ei.value.variant == "AttestationError" and "simulated" in str(ei.value)


def test_wrong_measurement_refused_by_attestation_policy(kbs: Kbs) -> None:
    with pytest.raises(KbsRefused) as ei:
        KbsClient(kbs.url, "snp", kbs.evidence(measurement=bytes(48))).attest()
    assert "measurement" in str(ei.value).lower()


def test_resource_policy_refusal_is_policy_deny_and_audited(kbs: Kbs) -> None:
    kbs.put("other/key/x", b"not for you")
    c = KbsClient(kbs.url, "snp", kbs.evidence())
    with pytest.raises(KbsRefused) as ei:
        c.get_resource("other/key/x")
    assert ei.value.status == 401 and ei.value.variant == "PolicyDeny"
    assert kbs.audit[-1].outcome == "refused" and kbs.audit[-1].path == "other/key/x"


def test_resource_policy_refuses_simulated_unless_allowed(kbs: Kbs) -> None:
    kbs.set_resource_policy(
        'version: 1\nid: real\nrules:\n  - resources: "default/key/*"\n    status: warning\n'
    )
    with pytest.raises(KbsRefused) as ei:
        KbsClient(kbs.url, "snp", kbs.evidence()).get_resource("default/key/one")
    assert "SIMULATED" in str(ei.value)


def test_release_guard_refusal_is_policy_deny_and_audited(kbs: Kbs) -> None:
    kbs.refuse_with.append("lockdown in force for snp")
    c = KbsClient(kbs.url, "snp", kbs.evidence())
    with pytest.raises(KbsRefused) as ei:
        c.get_resource("default/key/one")
    assert ei.value.variant == "PolicyDeny" and "lockdown" in str(ei.value)
    assert kbs.audit[-1].outcome == "refused" and "lockdown" in kbs.audit[-1].reason


def test_unknown_resource_refused_after_policy(kbs: Kbs) -> None:
    c = KbsClient(kbs.url, "snp", kbs.evidence())
    with pytest.raises(KbsRefused) as ei:
        c.get_resource("default/key/missing")
    assert ei.value.variant == "PluginInternalError"
    with pytest.raises(KbsNotFound):
        c.get_resource("default/key/bad%20name")


def test_attested_session_answers_its_old_token(kbs: Kbs) -> None:
    key = TeeKeyPair.generate()
    with httpx.Client(base_url=kbs.url) as http:
        r, sid = _handshake(kbs, http, key)
        assert r.status_code == 200
        # Trustee parses the Attestation first, then answers an attested session's old token
        r2 = http.post(
            "/kbs/v0/attest",
            content=r.request.content,
            headers={"Cookie": f"{SESSION_COOKIE}={sid}", "Content-Type": "application/json"},
        )
        assert r2.json()["token"] == r.json()["token"]
        res = http.get(
            "/kbs/v0/resource/default/key/one", headers={"Cookie": f"{SESSION_COOKIE}={sid}"}
        )
    assert decrypt_like_guest(key, JweResponse.model_validate(res.json())) == (
        b"the released secret"
    )


def test_bearer_token_without_cookie_releases(kbs: Kbs) -> None:
    key = TeeKeyPair.generate()
    with httpx.Client(base_url=kbs.url) as http:
        r, _ = _handshake(kbs, http, key)
    token = r.json()["token"]
    res = httpx.get(
        f"{kbs.url}/kbs/v0/resource/default/key/one",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert res.status_code == 200
    assert decrypt_like_guest(key, JweResponse.model_validate(res.json())) == (
        b"the released secret"
    )
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    res = httpx.get(
        f"{kbs.url}/kbs/v0/resource/default/key/one",
        headers={"Authorization": f"Bearer {forged}"},
    )
    assert res.status_code == 401 and _err(res) == "TokenVerifierError"


def test_admin_endpoints_need_admin_key(kbs: Kbs) -> None:
    for method, path in [
        ("POST", "/kbs/v0/resource/default/key/one"),
        ("DELETE", "/kbs/v0/resource/default/key/one"),
        ("POST", "/kbs/v0/resource-policy"),
        ("GET", "/kbs/v0/resource-policy"),
        ("POST", "/kbs/v0/attestation-policy"),
        ("POST", "/kbs/v0/reference-value"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = httpx.request(method, kbs.url + path, headers=headers, content=b"{}")
            assert r.status_code == 401 and _err(r) == "AdminAuthAccess", (method, path)


def test_rego_policy_refused_without_evaluator(kbs: Kbs) -> None:
    rego = "package policy\ndefault allow = false\n"
    with kbs.admin() as c:
        r = c.post(
            "/kbs/v0/resource-policy",
            json={"policy": base64.urlsafe_b64encode(rego.encode()).decode().rstrip("=")},
        )
    assert r.status_code == 401 and _err(r) == "ParsePolicyError"


def test_no_attestation_policy_fails_closed(kbs: Kbs) -> None:
    kbs.store.put_document("attestation-policy/default", "", kbs.clock())
    with kbs.store.tx() as conn:
        from sqlalchemy import delete

        from sealroom.kbs.store import documents

        conn.execute(delete(documents).where(documents.c.name == "attestation-policy/default"))
    with pytest.raises(KbsRefused) as ei:
        KbsClient(kbs.url, "snp", kbs.evidence()).attest()
    assert ei.value.variant == "PolicyDeny"


def test_expired_reference_value_fails_attestation(kbs: Kbs) -> None:
    past = (kbs.clock() - timedelta(days=1)).isoformat()
    with kbs.admin() as c:
        r = c.post(
            "/kbs/v0/reference-value",
            json={
                "name": "snp.measurement",
                "value": {"allowed": [MEASUREMENT.hex()]},
                "expires": past,
            },
        )
        assert r.status_code == 200
    with pytest.raises(KbsRefused) as ei:
        KbsClient(kbs.url, "snp", kbs.evidence()).attest()
    assert "expired" in str(ei.value)
    future = (kbs.clock() + timedelta(days=1)).isoformat()
    with kbs.admin() as c:
        c.post(
            "/kbs/v0/reference-value",
            json={
                "name": "snp.measurement",
                "value": {"allowed": [MEASUREMENT.hex()]},
                "expires": future,
            },
        )
        got = c.get("/kbs/v0/reference-value/snp.measurement").json()
    assert got == {"allowed": [MEASUREMENT.hex()]}
    KbsClient(kbs.url, "snp", kbs.evidence()).attest()


def test_reference_value_mismatch_fails_attestation(kbs: Kbs) -> None:
    with kbs.admin() as c:
        c.post(
            "/kbs/v0/reference-value",
            json={"name": "snp.measurement", "value": {"allowed": ["00" * 48]}},
        )
    with pytest.raises(KbsRefused) as ei:
        KbsClient(kbs.url, "snp", kbs.evidence()).attest()
    assert "reference.measurement" in str(ei.value)


def test_error_body_is_exactly_type_and_detail(kbs: Kbs) -> None:
    r = httpx.post(f"{kbs.url}/kbs/v0/auth", content=b"not json")
    assert r.status_code == 401 and json.loads(r.text).keys() == {"type", "detail"}
    assert _err(r) == "SerdeError"


def test_trustee_snp_evidence_runs_through_and_fails_only_the_binding(
    kbs: Kbs, vectors: Path
) -> None:
    """Trustee's own AS end-to-end SNP evidence (its JSON format, tee "snp"), at its pinned
    time: authentic and appraised; refused only because its REPORT_DATA was not made for
    this session's runtime data."""
    evidence = json.loads((vectors / "amd/genoa_trustee_e2e/snp_evidence.json").read_text())
    kbs.clock.offset = datetime(2025, 6, 1, tzinfo=UTC) - datetime.now(UTC)
    kbs.set_attestation_policy("version: 1\nid: real\nsnp: {}\n")
    with pytest.raises(KbsRefused) as ei:
        KbsClient(kbs.url, "snp", lambda _digest: evidence).attest()
    detail = str(ei.value)
    assert "1 rule(s) failed" in detail and "kbs.REPORT_DATA" in detail, detail


def test_tee_without_sealroom_verifier_refused(kbs: Kbs) -> None:
    with pytest.raises(KbsRefused) as ei:
        KbsClient(kbs.url, "cca", lambda _d: {}).attest()
    assert "unsupported-tee" in str(ei.value)


def test_cookie_lifetime_does_not_depend_on_guest_clock(kbs: Kbs) -> None:
    """Defect: with the KBS clock pinned in the past (real vectors) the cookie's Expires
    was already past for the guest, whose cookie jar dropped it. Max-Age fixes that."""
    kbs.clock.offset = timedelta(days=-400)
    r = httpx.post(
        f"{kbs.url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "extra-params": ""}
    )
    header = r.headers["set-cookie"].lower()
    assert "max-age=300" in header and "expires=" in header
    assert r.cookies.get(SESSION_COOKIE)


def test_session_writes_skip_fsync_admin_writes_keep_it(tmp_path: Path) -> None:
    """Creating/attesting a session does not wait for the disk (a power loss only makes
    the guest attest again); resources, policies, nonces and session deletes do. Both
    kinds of connection see each other's writes (one SQLite file in WAL mode)."""
    from datetime import UTC, datetime

    from sealroom.kbs.store import Session, Store

    store = Store(f"sqlite:///{tmp_path / 'kbs.db'}")
    try:
        with store.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        with store._session_engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        at = datetime.now(UTC)
        store.add_session(Session("s1", "snp", "n", {}, at + timedelta(minutes=5), *[None] * 4))
        assert store.attest_session("s1", "tok", {"a": 1}, {"kty": "EC"}, at)
        got = store.get_session("s1")  # read on the durable engine
        assert got is not None and got.token == "tok" and got.claims == {"a": 1}
        store.delete_session("s1")
        assert store.get_session("s1") is None
    finally:
        store.close()


def test_attestation_policy_change_on_one_replica_decides_the_next_attest_on_another(
    kbs: Kbs, tmp_path: Path
) -> None:
    """The attest reads session, policy and reference values in one transaction, from the
    shared store every time: a policy stored through one replica refuses sim evidence at
    the very next attest on another replica over the same database."""
    from sealroom.attestation.ear import VerifierKey
    from sealroom.kbs.server import create_app, hash_admin_key
    from sealroom.kbs.store import Store
    from sealroom.kbs.verify import Verifier
    from tests.kbs.conftest import serve

    store2 = Store(f"sqlite:///{tmp_path / 'kbs.db'}")
    app2 = create_app(
        store2,
        Verifier(VerifierKey.generate(), extra_roots=(kbs.authority.root,), clock=kbs.clock),
        admin_key_hashes=[hash_admin_key(kbs.admin_key)],
    )
    url2, server2, _t = serve(app2)
    try:
        KbsClient(url2, "snp", kbs.evidence()).attest()  # the shared SIM_POLICY allows it
        kbs.set_attestation_policy(REAL_ONLY_POLICY)  # stored through the first replica
        with pytest.raises(KbsRefused) as ei:
            KbsClient(url2, "snp", kbs.evidence()).attest()
        assert ei.value.variant == "AttestationError" and "simulated" in str(ei.value)
    finally:
        server2.should_exit = True
        store2.close()
