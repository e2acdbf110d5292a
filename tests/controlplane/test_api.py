"""Control plane API: authz, join tokens, heartbeats, lost hosts, queueing, problem+json,
consumer-only results, blob uploads, status/attestation/metrics and logs."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sealroom.attestation.sim.authority import SimAuthority
from sealroom.controlplane.app import create_app
from sealroom.controlplane.config import Settings
from sealroom.controlplane.logs import JsonFormatter
from sealroom.crypto.keys import PartyKeys
from sealroom.errors import InvalidInputError
from sealroom.manifest import Manifest
from sealroom.protocol.controlplane import result_request_message
from sealroom.testing.receipts import sim_receipt
from tests.controlplane.reports import reached, stopped

from .conftest import Env, manifest_doc

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def assert_problem(r: Any, status: int, type_: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    # "error": the class of a SealroomError, so clients rebuild it (ADR 0016)
    assert PROBLEM_KEYS <= set(body) <= PROBLEM_KEYS | {"error"}
    assert body["status"] == status
    if type_ is not None:
        assert body["type"] == type_
    return body


# -- authentication and authorisation ----------------------------------------------------


def test_missing_or_unknown_key_is_401(env: Env) -> None:
    assert_problem(env.client.get("/api/v1/me"), 401, "unauthenticated")
    assert_problem(env.client.get("/api/v1/me", headers=env.h("srk_nope")), 401, "unauthenticated")


def test_bootstrap_admin_key_file_is_0600_and_works(env: Env) -> None:
    f = env.data_dir / "bootstrap-admin-key"
    assert f.stat().st_mode & 0o777 == 0o600
    assert env.client.get("/api/v1/me", headers=env.h()).json()["role"] == "admin"


def test_configured_admin_key_is_used_and_not_written(make_env: Any) -> None:
    e = make_env(admin_key="srk_configured-admin-key-for-tests")
    assert not (e.data_dir / "bootstrap-admin-key").exists()
    r = e.client.get("/api/v1/me", headers=e.h("srk_configured-admin-key-for-tests"))
    assert r.json()["name"] == "admin"


def test_keys_are_stored_hashed(env: Env) -> None:
    from sqlalchemy import select

    from sealroom.controlplane.store.models import ApiKey

    _, key = env.user("carol")
    with env.cp.store.session() as s:
        hashes = list(s.scalars(select(ApiKey.key_hash)))
    assert hashlib.sha256(key.encode()).hexdigest() in hashes
    assert key not in hashes


def test_user_cannot_see_or_touch_another_accounts_computation(env: Env) -> None:
    env.agent()
    _, alice = env.user("alice")
    _, bob = env.user("bob")
    c = env.create(manifest_doc(env.parties), alice)
    cid = c["id"]
    for method, path in [
        ("GET", f"/api/v1/computations/{cid}"),
        ("GET", f"/api/v1/computations/{cid}/events"),
        ("GET", f"/api/v1/computations/{cid}/stats"),
        ("GET", f"/api/v1/computations/{cid}/receipt"),
        ("POST", f"/api/v1/computations/{cid}/cancel"),
        ("DELETE", f"/api/v1/computations/{cid}"),
    ]:
        r = env.client.request(method, path, headers=env.h(bob))
        assert_problem(r, 404)
    assert env.client.get("/api/v1/computations", headers=env.h(bob)).json() == {"computations": []}
    # the owner and the admin see it
    assert env.client.get(f"/api/v1/computations/{cid}", headers=env.h(alice)).status_code == 200
    listed = env.client.get("/api/v1/computations", headers=env.h()).json()["computations"]
    assert [x["id"] for x in listed] == [cid]


def test_user_role_cannot_call_admin_endpoints(env: Env) -> None:
    acc, key = env.user("dave")
    assert_problem(env.client.get("/api/v1/hosts", headers=env.h(key)), 403, "access-denied")
    assert_problem(
        env.client.post("/api/v1/hosts/join-tokens", headers=env.h(key)), 403, "access-denied"
    )
    r = env.client.post("/api/v1/accounts", json={"name": "x"}, headers=env.h(key))
    assert_problem(r, 403, "access-denied")
    # but may mint its own keys
    assert env.client.post(f"/api/v1/accounts/{acc}/keys", headers=env.h(key)).status_code == 201


def test_revoked_key_stops_working_at_once(env: Env) -> None:
    acc, key = env.user("erin")
    r = env.client.post(f"/api/v1/accounts/{acc}/keys", headers=env.h(key))
    kid, key2 = r.json()["key_id"], r.json()["key"]
    assert env.client.get("/api/v1/me", headers=env.h(key2)).status_code == 200
    assert env.client.delete(f"/api/v1/keys/{kid}", headers=env.h(key)).status_code == 204
    assert_problem(env.client.get("/api/v1/me", headers=env.h(key2)), 401, "unauthenticated")
    assert env.client.get("/api/v1/me", headers=env.h(key)).status_code == 200


def test_agent_credential_cannot_call_user_endpoints_and_vice_versa(env: Env) -> None:
    _, cred = env.agent()
    assert_problem(env.client.get("/api/v1/me", headers=env.h(cred)), 403, "access-denied")
    assert_problem(
        env.client.get("/api/v1/computations", headers=env.h(cred)), 403, "access-denied"
    )
    r = env.client.post("/api/v1/agent/heartbeat", json={}, headers=env.h())
    assert_problem(r, 403, "access-denied")


# -- join tokens ------------------------------------------------------------------------


def test_join_token_is_one_time(env: Env) -> None:
    tok = env.join_token()
    body = {"join_token": tok, "name": "h", "tee_kinds": ["sim"], "resources": {}}
    assert env.client.post("/api/v1/agent/register", json=body).status_code == 201
    assert_problem(env.client.post("/api/v1/agent/register", json=body), 403, "access-denied")


def test_join_token_expires_after_an_hour(env: Env) -> None:
    tok = env.join_token()
    env.clock.advance(3601)
    body = {"join_token": tok, "name": "h", "tee_kinds": ["sim"], "resources": {}}
    r = env.client.post("/api/v1/agent/register", json=body)
    assert "expired" in assert_problem(r, 403, "access-denied")["detail"]


def test_unknown_join_token_is_401(env: Env) -> None:
    body = {"join_token": "srj_unknown", "name": "h", "tee_kinds": ["sim"], "resources": {}}
    assert_problem(env.client.post("/api/v1/agent/register", json=body), 401)


def test_each_host_gets_its_own_credential(env: Env) -> None:
    h1, c1 = env.agent("h1")
    h2, c2 = env.agent("h2")
    assert h1 != h2 and c1 != c2 and c1.startswith("sra_")


# -- computations: create, validation, placement ----------------------------------------


def test_create_places_on_host_and_hash_is_server_side(env: Env) -> None:
    from sealroom.manifest import Manifest

    hid, _ = env.agent()
    doc = manifest_doc(env.parties)
    c = env.create(doc)
    assert c["state"] == "scheduled" and c["host_id"] == hid
    assert c["manifest_hash"] == Manifest.from_dict(doc).manifest_hash_hex
    evs = env.client.get(f"/api/v1/computations/{c['id']}/events", headers=env.h()).json()
    assert [(e["seq"], e["state"]) for e in evs["events"]] == [(1, "created"), (2, "scheduled")]
    assert all(e["reason"] for e in evs["events"])


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["limits"].pop("vcpus"), "manifest.limits.vcpus"),
        (lambda d: d["algorithm"].__setitem__("sha256", "XYZ"), "manifest.algorithm.sha256"),
        (lambda d: d["consumers"].clear(), "manifest.consumers"),
        (lambda d: d.__setitem__("name", "nul\x00name"), "manifest.name"),
    ],
    ids=["missing_vcpus", "bad_algorithm_hash", "no_consumers", "nul_character_in_name"],
)
def test_invalid_manifest_is_400_naming_the_field(env: Env, mutate: Any, field: str) -> None:
    env.agent()
    doc = manifest_doc(env.parties)
    mutate(doc)
    r = env.client.post("/api/v1/computations", json={"manifest": doc}, headers=env.h())
    body = assert_problem(r, 400)
    assert field in body["detail"]


def test_request_body_errors_are_problem_json_naming_the_field(env: Env) -> None:
    r = env.client.post("/api/v1/computations", json={"tee": "sim"}, headers=env.h())
    assert "manifest" in assert_problem(r, 400, "invalid-input")["detail"]
    r = env.client.post(
        "/api/v1/computations", json={"manifest": {}, "tee": "sgx"}, headers=env.h()
    )
    assert "tee" in assert_problem(r, 400, "invalid-input")["detail"]


def test_unknown_route_is_problem_json(env: Env) -> None:
    assert_problem(env.client.get("/api/v1/nothing-here"), 404, "not-found")


def test_no_capacity_is_429_naming_what_is_short(env: Env) -> None:
    env.agent("h1", cpus=1, mem=2048)
    r = env.client.post(
        "/api/v1/computations",
        json={"manifest": manifest_doc(env.parties, vcpus=2, memory_mb=4096)},
        headers=env.h(),
    )
    detail = assert_problem(r, 429, "capacity")["detail"]
    assert "2 vCPUs and 4096 MB" in detail and "host h1 with 1 vCPU, 2048 MB" in detail
    # nothing was stored
    assert env.client.get("/api/v1/computations", headers=env.h()).json()["computations"] == []


def test_no_host_with_tee_kind_is_429(env: Env) -> None:
    env.agent("h1", tee=("snp",))
    detail = assert_problem(
        env.client.post(
            "/api/v1/computations", json={"manifest": manifest_doc(env.parties)}, headers=env.h()
        ),
        429,
        "capacity",
    )["detail"]
    assert "tee sim" in detail


def test_spread_picks_host_with_most_free_vcpus(env: Env) -> None:
    h_small, _ = env.agent("small", cpus=2)
    h_big, _ = env.agent("big", cpus=4)
    placed = [env.create(manifest_doc(env.parties))["host_id"] for _ in range(4)]
    # big (4 free) -> big (3) -> tie 2/2 by memory (small has more) -> big
    assert placed[0] == h_big and placed[1] == h_big
    assert sorted(placed).count(h_small) >= 1


def test_exhaustion_then_capacity_freed_when_enclaves_stop(env: Env) -> None:
    _, cred = env.agent("h1", cpus=2)
    a = env.create(manifest_doc(env.parties))
    b = env.create(manifest_doc(env.parties))
    env.create(manifest_doc(env.parties), expect=429)
    env.complete(cred, a["id"])
    assert env.state(a["id"]) == "completed"
    env.heartbeat(cred)  # the host no longer runs it
    assert env.state(a["id"]) == "destroyed"
    c = env.create(manifest_doc(env.parties))
    assert c["state"] == "scheduled"
    r = env.client.post(f"/api/v1/computations/{b['id']}/cancel", headers=env.h())
    assert r.json() == {"state": "failed"}
    env.heartbeat(cred)
    assert env.create(manifest_doc(env.parties))["state"] == "scheduled"


def test_agent_reported_usage_counts_when_larger(env: Env) -> None:
    _, cred = env.agent("h1", cpus=4)
    env.heartbeat(cred, cpu_total=4, memory_mb_total=8192, cpu_used=4)
    env.create(manifest_doc(env.parties), expect=429)


def test_queue_true_waits_then_placed_fifo_when_capacity_frees(env: Env) -> None:
    _, cred = env.agent("h1", cpus=1)
    a = env.create(manifest_doc(env.parties))
    q1 = env.create(manifest_doc(env.parties), queue=True)
    q2 = env.create(manifest_doc(env.parties), queue=True)
    assert q1["state"] == "created" and q1["host_id"] is None
    env.cp.tick()
    assert env.state(q1["id"]) == "created"
    env.heartbeat(cred, [reached(a["id"], "failed", "boom")])
    env.cp.tick()
    assert env.state(q1["id"]) == "created"  # a's enclave may still run
    env.heartbeat(cred, [stopped(a["id"])])
    env.cp.tick()
    assert env.state(q1["id"]) == "scheduled"
    assert env.state(q2["id"]) == "created"


# -- heartbeats -------------------------------------------------------------------------


def test_heartbeat_maps_states_and_is_idempotent(env: Env) -> None:
    _, cred = env.agent()
    c = env.create(manifest_doc(env.parties))
    cid = c["id"]
    out = env.heartbeat(cred)
    assert [(d["computation_id"], d["action"]) for d in out["desired"]] == [(cid, "run")]
    assert out["desired"][0]["manifest"]["id"] == "cp-test"
    rep = [reached(cid, "awaiting_inputs", endpoint="https://127.0.0.1:4443", stats={"rss_mb": 12})]
    for _ in range(3):
        env.heartbeat(cred, rep)
    d = env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()
    assert d["state"] == "awaiting_inputs"
    assert d["enclave_url"] == "https://127.0.0.1:4443"
    # created, scheduled, launching, awaiting_inputs: no duplicates
    assert d["events_count"] == 4
    stats = env.client.get(f"/api/v1/computations/{cid}/stats", headers=env.h()).json()
    assert stats == {"rss_mb": 12}
    # a stale report (launching after awaiting_inputs) writes nothing
    env.heartbeat(cred, [reached(cid, "launching")])
    assert (
        env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()["events_count"] == 4
    )


def test_enclave_that_died_is_failed_with_agents_reason_then_destroyed(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [reached(cid, "running")])
    died = [
        {"state": "failed", "reason": "killed by OOM"},
        {"state": "destroyed", "reason": "enclave stopped"},
    ]
    out = env.heartbeat(cred, [{"computation_id": cid, "transitions": died}])
    assert env.state(cid) == "destroyed"
    evs = env.client.get(f"/api/v1/computations/{cid}/events", headers=env.h()).json()["events"]
    assert [(e["state"], e["reason"]) for e in evs if e["type"] == "state"][-2:] == [
        ("failed", "killed by OOM"),
        ("destroyed", "enclave stopped"),
    ]
    assert out["desired"] == []  # stopped already: nothing to ask


def test_agent_cannot_report_backwards_transition(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [reached(cid, "running")])
    before = env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()
    back = [{"state": "awaiting_inputs", "reason": "rewind"}]
    env.heartbeat(cred, [{"computation_id": cid, "transitions": back}])
    after = env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()
    assert after["state"] == "running"
    assert after["events_count"] == before["events_count"]


def test_agent_cannot_skip_a_state_or_reopen_an_outcome(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    # scheduled -> completed skips the whole run: refused, nothing recorded
    env.heartbeat(cred, [{"computation_id": cid, "transitions": [{"state": "completed"}]}])
    assert env.state(cid) == "scheduled"
    env.heartbeat(cred, [reached(cid, "failed", "boom")])
    assert env.state(cid) == "failed"
    env.heartbeat(cred, [{"computation_id": cid, "transitions": [{"state": "completed"}]}])
    assert env.state(cid) == "failed"


def test_agent_report_of_a_state_no_enclave_has_is_rejected(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    r = env.client.post(
        "/api/v1/agent/heartbeat",
        json={"enclaves": [{"computation_id": cid, "transitions": [{"state": "created"}]}]},
        headers=env.h(cred),
    )
    assert r.status_code == 400 and "transitions" in r.json()["detail"]
    assert env.state(cid) == "scheduled"


def test_cancelled_computation_still_reported_gets_stop(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [reached(cid, "running")])
    env.client.post(f"/api/v1/computations/{cid}/cancel", headers=env.h())
    evs = env.client.get(f"/api/v1/computations/{cid}/events", headers=env.h()).json()["events"]
    assert evs[-1]["reason"] == "cancelled by admin"
    out = env.heartbeat(cred, [reached(cid, "running")])
    assert [(d["computation_id"], d["action"]) for d in out["desired"]] == [(cid, "stop")]


def test_other_hosts_computation_is_stopped_not_adopted(env: Env) -> None:
    _, _c1 = env.agent("h1", cpus=8)
    _, c2 = env.agent("h2", cpus=1)
    cid = env.create(manifest_doc(env.parties))["id"]  # lands on h1 (most free)
    out = env.heartbeat(c2, [reached(cid, "running")])
    assert [(d["computation_id"], d["action"]) for d in out["desired"]] == [(cid, "stop")]
    assert env.state(cid) == "scheduled"


# -- lost hosts -------------------------------------------------------------------------


def test_lost_host_reschedules_scheduled_and_fails_running(env: Env) -> None:
    h1, c1 = env.agent("h1", cpus=8)
    h2, c2 = env.agent("h2", cpus=2)
    run = env.create(manifest_doc(env.parties))["id"]
    sched = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(c1, [reached(run, "running")])
    env.clock.advance(10)
    env.heartbeat(c2)
    env.cp.tick()
    assert env.state(run) == "running"  # not yet past the timeout
    env.clock.advance(6)
    env.heartbeat(c2)
    env.cp.tick()
    hosts = {h["id"]: h for h in env.client.get("/api/v1/hosts", headers=env.h()).json()["hosts"]}
    assert hosts[h1]["state"] == "lost" and hosts[h2]["state"] == "online"
    assert env.state(run) == "failed"
    evs = env.client.get(f"/api/v1/computations/{run}/events", headers=env.h()).json()["events"]
    assert evs[-1]["reason"] == "host lost"
    d = env.client.get(f"/api/v1/computations/{sched}", headers=env.h()).json()
    assert d["state"] == "scheduled" and d["host_id"] == h2
    # the host returns: it is told to stop what failed
    out = env.heartbeat(c1, [reached(run, "running")])
    assert [(x["computation_id"], x["action"]) for x in out["desired"]] == [(run, "stop")]
    assert env.client.get("/api/v1/hosts", headers=env.h()).json()["hosts"][0]["state"] == "online"


def test_lost_host_with_no_other_room_requeues_queued_computation(env: Env) -> None:
    _, _c1 = env.agent("h1", cpus=1)
    q = env.create(manifest_doc(env.parties), queue=True)["id"]
    assert env.state(q) == "scheduled"
    env.clock.advance(20)
    env.cp.tick()
    assert env.state(q) == "created"


def test_host_back_in_time_loses_nothing(env: Env) -> None:
    _, c1 = env.agent("h1")
    cid = env.create(manifest_doc(env.parties))["id"]
    for _ in range(5):
        env.clock.advance(10)
        env.heartbeat(c1, [reached(cid, "running")])
        env.cp.tick()
    assert env.state(cid) == "running"


# -- forwarded events, blobs and results ------------------------------------------------


def test_forwarded_enclave_events_are_stored_once_per_seq(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    batch = {
        "events": [
            {"seq": 1, "type": "upload_accepted", "message": "slot a"},
            {"seq": 2, "type": "upload_accepted", "message": "slot b"},
        ]
    }
    for _ in range(2):
        r = env.client.post(
            f"/api/v1/agent/computations/{cid}/events", json=batch, headers=env.h(cred)
        )
        assert r.status_code == 204
    evs = env.client.get(f"/api/v1/computations/{cid}/events?after=2", headers=env.h()).json()
    assert [(e["seq"], e["message"]) for e in evs["events"]] == [(3, "slot a"), (4, "slot b")]


def _complete_with_blobs(env: Env, cred: str, cid: str, result: bytes) -> None:
    r = env.put_blob(cred, cid, "result.alice", result)
    assert r.status_code == 204, r.text
    env.complete(cred, cid)


def _signed(env: Env, cid: str, consumer: str, signer: PartyKeys) -> dict[str, str]:
    ch = env.client.get(f"/api/v1/computations/{cid}/challenge").json()["challenge"]
    d = env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()
    msg = result_request_message(
        cid, bytes.fromhex(d["manifest_hash"]), consumer, bytes.fromhex(ch)
    )
    return {"X-Sealroom-Challenge": ch, "X-Sealroom-Signature": signer.sign(msg).hex()}


def test_result_served_only_to_named_consumer(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    sealed = b"\x00ciphertext only\xff" * 10
    _complete_with_blobs(env, cred, cid, sealed)
    alice, mallory = env.parties["alice"], env.parties["mallory"]
    url = f"/api/v1/computations/{cid}/results/alice"
    # the right consumer
    hdrs = _signed(env, cid, "alice", alice)
    r = env.client.get(url, headers=hdrs)
    assert r.status_code == 200 and r.content == sealed
    assert r.headers["X-Sealroom-Sealed-Sha256"] == hashlib.sha256(sealed).hexdigest()
    # the challenge is one-time
    assert_problem(env.client.get(url, headers=hdrs), 403, "access-denied")
    # someone else's key, claiming to be alice
    assert_problem(env.client.get(url, headers=_signed(env, cid, "alice", mallory)), 403)
    # a non-consumer
    r = env.client.get(
        f"/api/v1/computations/{cid}/results/mallory", headers=_signed(env, cid, "mallory", mallory)
    )
    assert_problem(r, 403, "access-denied")
    # no signature at all; an admin key is not a consumer key either
    assert_problem(env.client.get(url), 403)
    assert_problem(env.client.get(url, headers=env.h()), 403)


def test_result_before_completion_is_409(env: Env) -> None:
    env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    r = env.client.get(
        f"/api/v1/computations/{cid}/results/alice",
        headers=_signed(env, cid, "alice", env.parties["alice"]),
    )
    assert_problem(r, 409)


def test_receipt_for_owner_and_for_consumer_signature(env: Env) -> None:
    _, cred = env.agent()
    _, key = env.user("olga")
    cid = env.create(manifest_doc(env.parties), key)["id"]
    _complete_with_blobs(env, cred, cid, b"x")
    r = env.client.get(f"/api/v1/computations/{cid}/receipt", headers=env.h(key))
    assert r.status_code == 200 and r.json()["payload"]["exit"]["ok"] is True
    r = env.client.get(
        f"/api/v1/computations/{cid}/receipt", headers=_signed(env, cid, "bob", env.parties["bob"])
    )
    assert r.status_code == 200
    r = env.client.get(
        f"/api/v1/computations/{cid}/receipt",
        headers=_signed(env, cid, "mallory", env.parties["mallory"]),
    )
    assert_problem(r, 403)


def test_blob_upload_only_by_the_placed_host_and_hash_checked(env: Env) -> None:
    _, c1 = env.agent("h1", cpus=8)
    _, c2 = env.agent("h2", cpus=1)
    cid = env.create(manifest_doc(env.parties))["id"]
    data = b"sealed"
    good = hashlib.sha256(data).hexdigest()
    url = f"/api/v1/agent/computations/{cid}/blobs/result.alice"
    r = env.client.put(url, content=data, headers={**env.h(c2), "X-Sealroom-Sha256": good})
    assert_problem(r, 403, "access-denied")
    r = env.client.put(url, content=data, headers={**env.h(c1), "X-Sealroom-Sha256": "00" * 32})
    assert_problem(r, 400, "blob-hash-mismatch")
    assert not list((env.data_dir / "blobs").rglob("result.alice"))
    r = env.client.put(
        f"/api/v1/agent/computations/{cid}/blobs/..%2Fx",
        content=data,
        headers={**env.h(c1), "X-Sealroom-Sha256": good},
    )
    assert r.status_code in (400, 404)
    r = env.client.put(
        f"/api/v1/agent/computations/{cid}/blobs/result.mallory",
        content=data,
        headers={**env.h(c1), "X-Sealroom-Sha256": good},
    )
    assert_problem(r, 400)
    r = env.client.put(url, content=data, headers={**env.h(c1), "X-Sealroom-Sha256": good})
    assert r.status_code == 204
    assert r.status_code == 204


def test_run_log_blobs_only_for_consumers_and_log_readers(env: Env) -> None:
    """Issue 9 defect 2: sealed run logs travel like results (log.<reader> blobs), stored
    for and served to the manifest's consumers and log readers only, failed runs too."""
    _, cred = env.agent()
    doc = manifest_doc(env.parties)
    doc["log_readers"] = [env.parties["algo"].public.to_json_obj()]
    cid = env.create(doc)["id"]
    for name in ("alice", "algo"):
        assert env.put_blob(cred, cid, f"log.{name}", f"sealed-{name}".encode()).status_code == 204
    # not a reader of this manifest's log: refused from the name, before the body
    assert_problem(env.put_blob(cred, cid, "log.mallory", b"x"), 400, "unknown-log-reader")
    assert_problem(env.put_blob(cred, cid, "log.dp1", b"x"), 400, "unknown-log-reader")
    env.heartbeat(cred, [{"computation_id": cid, "state": "failed", "reason": "exit"}])
    for name in ("alice", "algo"):
        r = env.client.get(
            f"/api/v1/computations/{cid}/logs/{name}",
            headers=_signed(env, cid, name, env.parties[name]),
        )
        assert r.status_code == 200 and r.content == f"sealed-{name}".encode()
        assert r.headers["X-Sealroom-Sealed-Sha256"] == hashlib.sha256(r.content).hexdigest()
    # another party's signature, a non-reader, no signature: refused
    r = env.client.get(
        f"/api/v1/computations/{cid}/logs/algo",
        headers=_signed(env, cid, "algo", env.parties["alice"]),
    )
    assert_problem(r, 403, "access-denied")
    r = env.client.get(
        f"/api/v1/computations/{cid}/logs/dp1",
        headers=_signed(env, cid, "dp1", env.parties["dp1"]),
    )
    assert_problem(r, 403, "access-denied")
    assert_problem(env.client.get(f"/api/v1/computations/{cid}/logs/alice"), 403)


def test_delete_only_finished_and_removes_blobs(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    assert_problem(env.client.delete(f"/api/v1/computations/{cid}", headers=env.h()), 409)
    _complete_with_blobs(env, cred, cid, b"x")
    assert (env.data_dir / "blobs" / cid / "receipt").is_file()
    assert env.client.delete(f"/api/v1/computations/{cid}", headers=env.h()).status_code == 204
    assert not (env.data_dir / "blobs" / cid).exists()
    assert_problem(env.client.get(f"/api/v1/computations/{cid}", headers=env.h()), 404)


def test_event_stream_ends_after_final_state(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [reached(cid, "failed", "x")])
    with env.client.stream(
        "GET", f"/api/v1/computations/{cid}/events/stream", headers=env.h()
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    assert text.count("data: ") == 6 and "id: 6" in text  # created .. failed


# -- status, attestation, metrics, logs --------------------------------------------------


def test_compute_status_and_attestation_shapes(env: Env) -> None:
    s = env.client.get("/api/v1/compute/status").json()
    assert s["status"] == "degraded" and s["attestation_status"] == "none"
    env.agent("h1", cpus=4, mem=1000)
    env.create(manifest_doc(env.parties, memory_mb=100))
    s = env.client.get("/api/v1/compute/status").json()
    assert set(s) == {
        "status",
        "tee_technology",
        "attestation_status",
        "tee_claimed",
        "tee_verified",
        "available_models",
        "system_metrics",
    }
    assert s["status"] == "operational" and s["tee_technology"] == "sim (claimed)"
    assert s["attestation_status"] == "claimed" and s["available_models"] == []
    assert s["system_metrics"] == {
        "hosts_online": 1,
        "hosts_total": 1,
        "computations_running": 0,
        "cpu_total": 4,
        "cpu_used": 1,
        "memory_mb_total": 1000,
        "memory_mb_used": 100,
    }
    a = env.client.get("/api/v1/compute/attestation").json()
    assert set(a) == {
        "attestation_report",
        "tee_type",
        "timestamp",
        "verification_service",
        "verification_instructions",
    }
    assert a["attestation_report"] is None and a["tee_type"] == "none"
    # no attestation service configured: none is named (it used to name a CLI command)
    assert a["verification_service"] is None


def test_compute_attestation_names_the_attestation_service(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    """verification_service is the configured attestation service's verify URL; a setting
    that is not an http(s) URL is refused when the control plane starts."""
    env = make_env(attestation_service="http://127.0.0.1:8090/")
    a = env.client.get("/api/v1/compute/attestation").json()
    assert a["verification_service"] == "http://127.0.0.1:8090/api/v1/attestation/verify"
    assert "--service URL" in a["verification_instructions"]
    for bad in ("sealroom attest verify", "ftp://x/", "http://h/?q=1"):
        with pytest.raises(InvalidInputError):
            create_app(Settings(tmp_path / "bad", attestation_service=bad))


def test_metrics_exposes_states_hosts_placements_latency(env: Env) -> None:
    env.agent()
    env.create(manifest_doc(env.parties))
    text = env.client.get("/metrics").text
    assert 'sealroom_computations{state="scheduled"} 1.0' in text
    assert "sealroom_hosts_online 1.0" in text
    assert "sealroom_placements_total 1.0" in text
    assert "sealroom_api_request_seconds_bucket" in text
    assert env.client.get("/healthz").json() == {"ok": True}


def test_logs_are_json_and_never_contain_keys(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    import json

    caplog.set_level(logging.INFO, logger="sealroom")
    _, key = env.user("lena")
    _, cred = env.agent()
    env.client.get("/api/v1/me", headers=env.h(key))
    env.heartbeat(cred)
    fmt = JsonFormatter()
    lines = [fmt.format(r) for r in caplog.records]
    assert lines and all(json.loads(x)["message"] for x in lines)
    joined = "\n".join(lines)
    assert key not in joined and cred not in joined and env.admin_key not in joined
    rec = logging.makeLogRecord({"msg": f"oops {key}", "name": "sealroom.x"})
    assert key not in fmt.format(rec)


def test_background_task_marks_silent_host_lost(tmp_path: Any, parties: Any) -> None:
    """The lifespan task (not a test-driven tick) finds the silent host."""
    import time

    from fastapi.testclient import TestClient

    from sealroom.controlplane.app import create_app
    from sealroom.controlplane.config import Settings

    key = "srk_lifespan-test-admin-key-0123456789"
    app = create_app(
        Settings(
            data_dir=tmp_path / "cp",
            admin_key=key,
            agent_timeout=0.2,
            tick_interval=0.05,
            print_bootstrap_key=False,
        )
    )
    h = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as c:
        tok = c.post("/api/v1/hosts/join-tokens", headers=h).json()["token"]
        c.post(
            "/api/v1/agent/register",
            json={"join_token": tok, "name": "h1", "tee_kinds": ["sim"], "resources": {}},
        )
        deadline = time.monotonic() + 60
        while c.get("/api/v1/hosts", headers=h).json()["hosts"][0]["state"] != "lost":
            assert time.monotonic() < deadline, "host never marked lost"
            time.sleep(0.05)


def test_oversized_json_body_is_refused_before_it_is_read(env: Env) -> None:
    from sealroom.controlplane.app import MAX_JSON_BODY

    big = b'{"manifest": "' + b"x" * (MAX_JSON_BODY + 1) + b'"}'
    r = env.client.post(
        "/api/v1/computations", content=big, headers={**env.h(), "Content-Type": "application/json"}
    )
    assert_problem(r, 413, "payload-too-large")
    r = env.client.post("/api/v1/computations", json={"manifest": {}}, headers=env.h())
    assert r.status_code == 400  # an ordinary body still reaches validation


# -- host facts are claims until verified; transitions need evidence (issue 9, defect 8)


def test_host_tee_is_a_claim_until_verified(env: Env) -> None:
    """A host registering as SNP is not an SNP host: status and host list say "claimed"
    until the control plane verified evidence (a receipt) from it, and then say what the
    evidence was: simulated SNP verifies as "sim", never as "snp"."""
    _, cred = env.agent("h1", tee=("snp", "sim"))
    s = env.client.get("/api/v1/compute/status").json()
    assert s["attestation_status"] == "claimed"
    assert s["tee_technology"] == "sim (claimed), snp (claimed)"
    assert s["tee_claimed"] == ["sim", "snp"] and s["tee_verified"] == []
    host = env.client.get("/api/v1/hosts", headers=env.h()).json()["hosts"][0]
    assert host["tee"] == ["sim (claimed)", "snp (claimed)"]
    assert host["tee_kinds_verified"] == [] and host["tee_verified_at"] is None
    cid = env.create(manifest_doc(env.parties))["id"]
    env.complete(cred, cid)
    s = env.client.get("/api/v1/compute/status").json()
    assert s["attestation_status"] == "simulated" and s["tee_verified"] == ["sim"]
    assert s["tee_technology"] == "sim, snp (claimed)"
    host = env.client.get("/api/v1/hosts", headers=env.h()).json()["hosts"][0]
    assert host["tee"] == ["sim (verified)", "snp (claimed)"]
    assert host["tee_verified_at"] is not None


def test_agent_cannot_complete_without_verified_receipt(env: Env) -> None:
    """The host's "completed" alone fails the computation; a receipt that does not verify
    (forged, another manifest's, signed by an untrusted authority) is refused and not
    stored; no results are served without a verified receipt saying ok."""
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [reached(cid, "running")])
    # forged: not a receipt at all, one with a flipped byte, one for another computation
    assert_problem(env.put_blob(cred, cid, "receipt", b'{"receipt": 1}'), 400)
    good = json.loads(env.receipt(cid))
    good["payload"]["exit"]["reason"] = "tampered"
    assert_problem(env.put_blob(cred, cid, "receipt", json.dumps(good).encode()), 422)
    other = env.create(manifest_doc(env.parties, mid="other"))["id"]
    assert_problem(env.put_blob(cred, cid, "receipt", env.receipt(other)), 422)
    # a receipt from an authority this control plane does not trust
    rogue = sim_receipt(
        Manifest.from_dict(manifest_doc(env.parties)), SimAuthority.ephemeral(), now=env.clock()
    )
    assert_problem(env.put_blob(cred, cid, "receipt", json.dumps(rogue).encode()), 422)
    assert not (env.data_dir / "blobs" / cid / "receipt").exists()
    env.heartbeat(cred, [reached(cid, "completed")])
    d = env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()
    assert d["state"] == "failed" and "no receipt that verifies" in d["reason"]
    r = env.client.get(
        f"/api/v1/computations/{cid}/results/alice",
        headers=_signed(env, cid, "alice", env.parties["alice"]),
    )
    assert_problem(r, 409, "computation-not-completed")
    # a verified receipt saying the run failed fails it with the enclave's reason
    third = env.create(manifest_doc(env.parties, mid="third"))["id"]
    r = env.put_blob(cred, third, "receipt", env.receipt(third, ok=False, reason="exit code 3"))
    assert r.status_code == 204, r.text
    env.heartbeat(cred, [reached(third, "completed")])
    assert env.state(third) == "failed"


def test_agent_cannot_post_output_events(env: Env) -> None:
    """Algorithm output never reaches the control plane from a host, nor can a host
    write "state" events; what it relays is marked as the host's."""
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    before = env.client.get(f"/api/v1/computations/{cid}/events", headers=env.h()).json()
    url = f"/api/v1/agent/computations/{cid}/events"
    for kind in ("output", "state", "enclave"):
        batch = {"events": [{"seq": 1, "type": kind, "message": "secret=42"}]}
        r = env.client.post(url, json=batch, headers=env.h(cred))
        assert_problem(r, 400, "event-type-not-allowed")
    after = env.client.get(f"/api/v1/computations/{cid}/events", headers=env.h()).json()
    assert after == before
    ok = {"events": [{"seq": 1, "type": "upload_accepted", "message": "slot a"}]}
    assert env.client.post(url, json=ok, headers=env.h(cred)).status_code == 204
    evs = env.client.get(f"/api/v1/computations/{cid}/events", headers=env.h()).json()["events"]
    assert evs[-1]["source"] == "host" and evs[0]["source"] == "control-plane"


# -- a restarted control plane (issue 9, defect 5) ---------------------------------------


def test_restarted_control_plane_gives_hosts_a_grace_period(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    """After a restart, hosts silent since before it are not lost at once: they get
    startup_grace seconds to heartbeat (their agents were backing off)."""
    d = tmp_path / "data"
    e1 = make_env(data_dir=d)
    _, cred = e1.agent("h1")
    cid = e1.create(manifest_doc(e1.parties))["id"]
    e1.heartbeat(cred, [reached(cid, "running")])
    e1.client.__exit__(None, None, None)
    e1.clock.advance(120)  # down for two minutes
    e2 = make_env(data_dir=d, clock=e1.clock, startup_grace=60.0)
    e2.admin_key = e1.admin_key
    e2.cp.tick()
    assert e2.state(cid) == "running"
    e2.clock.advance(59)
    e2.cp.tick()
    assert e2.state(cid) == "running"
    e2.clock.advance(2)  # the grace is over and the host never came back
    e2.cp.tick()
    assert e2.state(cid) == "failed"


def test_verified_receipt_after_host_lost_completes_and_serves_results(env: Env) -> None:
    """The control plane failed a computation for "host lost"; the host comes back with
    a receipt that verifies: the computation completes and its result is served, also
    once the enclave is gone (destroyed)."""
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [reached(cid, "running")])
    env.clock.advance(30)
    env.cp.tick()
    assert env.state(cid) == "failed"
    env.heartbeat(cred)  # back, the enclave no longer listed: destroyed (outcome failed)
    assert env.state(cid) == "destroyed"
    sealed = b"ciphertext"
    assert env.put_blob(cred, cid, "result.alice", sealed).status_code == 204
    assert env.put_blob(cred, cid, "receipt", env.receipt(cid)).status_code == 204
    r = env.client.get(
        f"/api/v1/computations/{cid}/results/alice",
        headers=_signed(env, cid, "alice", env.parties["alice"]),
    )
    assert r.status_code == 200 and r.content == sealed
    d = env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()
    assert d["reason"] == "verified receipt: completed"
    evs = env.client.get(f"/api/v1/computations/{cid}/events", headers=env.h()).json()["events"]
    assert evs[-1]["type"] == "receipt" and "completed" in evs[-1]["reason"]


# -- per-account quotas (issue 9, defect 10) ---------------------------------------------


def test_account_quota_returns_429(make_env: Callable[..., Env]) -> None:
    """One account's idle computations cannot take every host: past its limits (default
    from settings, or the account's own set by an admin) a create is a 429 problem+json
    naming the limit; other accounts still get capacity; finishing frees quota."""
    env = make_env(quota_computations=2, quota_vcpus=3)
    env.agent("h1", cpus=16, mem=1 << 20)
    acc, greedy = env.user("greedy")
    _, other = env.user("other")
    a = env.create(manifest_doc(env.parties), greedy, queue=True)
    env.create(manifest_doc(env.parties, vcpus=2), greedy, queue=True)
    r = env.client.post(
        "/api/v1/computations",
        json={"manifest": manifest_doc(env.parties), "tee": "sim"},
        headers=env.h(greedy),
    )
    p = assert_problem(r, 429, "quota-exceeded")
    assert "at most 2 computations" in p["detail"] and "holds 2" in p["detail"]
    env.create(manifest_doc(env.parties), other)  # the cluster is not full: others go on
    # the account's own limits, set by an admin: vCPUs now bind
    r = env.client.put(
        f"/api/v1/accounts/{acc}/quota",
        json={"computations": 10, "vcpus": 4},
        headers=env.h(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["used_vcpus"] == 3 and r.json()["memory_mb"] is None
    p = assert_problem(
        env.client.post(
            "/api/v1/computations",
            json={"manifest": manifest_doc(env.parties, vcpus=2)},
            headers=env.h(greedy),
        ),
        429,
        "quota-exceeded",
    )
    assert "at most 4 vCPUs" in p["detail"] and "needs 2" in p["detail"]
    env.create(manifest_doc(env.parties), greedy)  # 1 more vCPU fits
    # only an admin sets quotas; an account may read its own
    assert_problem(
        env.client.put(f"/api/v1/accounts/{acc}/quota", json={}, headers=env.h(greedy)), 403
    )
    assert (
        env.client.get(f"/api/v1/accounts/{acc}/quota", headers=env.h(greedy)).json()[
            "used_computations"
        ]
        == 3
    )
    # finished work frees quota
    env.client.post(f"/api/v1/computations/{a['id']}/cancel", headers=env.h(greedy))
    env.create(manifest_doc(env.parties), greedy)


# -- capacity of enclaves not yet known stopped (issue 9, defect 9) -----------------------


def test_capacity_held_until_enclave_known_stopped(env: Env) -> None:
    """A cancelled computation, or one failed because its host went silent, keeps its
    host's capacity until the host reports the enclave gone ("destroyed"): an enclave that
    may still run is never counted as free, even when the agent's own usage report says 0."""
    _, cred = env.agent("h1", cpus=2)
    a = env.create(manifest_doc(env.parties, vcpus=2))["id"]
    env.heartbeat(cred, [reached(a, "running")])
    env.client.post(f"/api/v1/computations/{a}/cancel", headers=env.h())
    assert env.state(a) == "failed"
    env.create(manifest_doc(env.parties, vcpus=2), expect=429)  # still running there
    out = env.heartbeat(cred, [reached(a, "running")])
    assert {"computation_id": a, "action": "stop"}.items() <= out["desired"][0].items()
    env.create(manifest_doc(env.parties, vcpus=2), expect=429)
    env.heartbeat(cred, [stopped(a)])  # the agent stopped it
    assert env.state(a) == "destroyed"
    b = env.create(manifest_doc(env.parties, vcpus=2))["id"]
    # the host goes silent with b running: failed, and its capacity stays held while
    # the host is back but still reports b's enclave
    env.heartbeat(cred, [reached(b, "running")])
    env.clock.advance(30)
    env.cp.tick()
    assert env.state(b) == "failed"
    host = env.client.get("/api/v1/hosts", headers=env.h()).json()["hosts"][0]
    assert host["resources"]["cpu_used"] == 2 and host["enclaves"] == 1
    env.heartbeat(cred, [reached(b, "running")], cpu_total=2)
    env.create(manifest_doc(env.parties, vcpus=2), expect=429)
    env.heartbeat(cred, cpu_total=2)  # gone from the host's list: known stopped
    assert env.state(b) == "destroyed"
    env.create(manifest_doc(env.parties, vcpus=2))


def test_account_quota_binds_without_default_limits(make_env: Callable[..., Env]) -> None:
    """A create skips summing an account's holdings when no limit applies (issue 16); an
    account's own limit, with no default set, still binds."""
    env = make_env()
    env.agent("h1", cpus=16, mem=1 << 20)
    acc, user = env.user("limited")
    env.create(manifest_doc(env.parties), user)
    env.create(manifest_doc(env.parties), user)  # no limit at all: both placed
    r = env.client.put(f"/api/v1/accounts/{acc}/quota", json={"computations": 3}, headers=env.h())
    assert r.status_code == 200, r.text
    env.create(manifest_doc(env.parties), user)
    p = assert_problem(
        env.client.post(
            "/api/v1/computations",
            json={"manifest": manifest_doc(env.parties)},
            headers=env.h(user),
        ),
        429,
        "quota-exceeded",
    )
    assert "at most 3 computations" in p["detail"] and "holds 3" in p["detail"]


def test_heartbeat_that_frees_capacity_places_the_queue_without_a_tick(env: Env) -> None:
    """Heartbeats run the queue only when they changed some capacity (issue 16): the one
    that reports the enclave gone places the queued computation at once."""
    _, cred = env.agent("h1", cpus=1)
    a = env.create(manifest_doc(env.parties))
    q = env.create(manifest_doc(env.parties), queue=True)
    env.heartbeat(cred, [reached(a["id"], "failed", "boom")])
    env.heartbeat(cred, [reached(a["id"], "failed", "boom")])  # nothing changed
    assert env.state(q["id"]) == "created"
    env.heartbeat(cred, [stopped(a["id"])])
    assert env.state(q["id"]) == "scheduled"
