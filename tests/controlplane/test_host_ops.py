"""`sealroom host drain|remove` (issue 15): an operator stops placing work on a host and
forgets it; its agent's credential stops working at once; nothing live is dropped."""

from __future__ import annotations

from tests.controlplane.conftest import Env, manifest_doc
from tests.controlplane.reports import reached


def _hosts(env: Env) -> dict[str, dict[str, object]]:
    r = env.client.get("/api/v1/hosts", headers=env.h())
    assert r.status_code == 200, r.text
    return {h["name"]: h for h in r.json()["hosts"]}


def test_drained_host_takes_no_new_work_and_resume_places_the_queue(env: Env) -> None:
    hid, cred = env.agent("h1", cpus=4)
    running = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [reached(running, "running")])
    r = env.client.post("/api/v1/hosts/h1/drain", json={"draining": True}, headers=env.h())
    assert r.status_code == 200 and r.json() == {
        "id": hid, "name": "h1", "state": "online", "draining": True
    }  # fmt: skip
    assert _hosts(env)["h1"]["draining"] is True
    # nothing new is placed there: refused now, or waiting in the queue
    r = env.client.post(
        "/api/v1/computations",
        json={"manifest": manifest_doc(env.parties), "tee": "sim"},
        headers=env.h(),
    )
    assert r.status_code == 429, r.text
    queued = env.create(manifest_doc(env.parties), queue=True)["id"]
    env.heartbeat(cred, [reached(running, "running")])  # a heartbeat does not undo a drain
    env.cp.tick()
    assert env.state(queued) == "created" and env.state(running) == "running"
    r = env.client.post(f"/api/v1/hosts/{hid}/drain", json={"draining": False}, headers=env.h())
    assert r.status_code == 200 and r.json()["draining"] is False
    assert env.state(queued) == "scheduled"


def test_remove_refused_while_live_then_credential_revoked(env: Env) -> None:
    hid, cred = env.agent("h1", cpus=4)
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [reached(cid, "running")])
    r = env.client.delete("/api/v1/hosts/h1", headers=env.h())
    assert r.status_code == 409 and r.json()["type"] == "host-busy", r.text
    assert cid in r.json()["detail"]
    assert env.state(cid) == "running"
    assert env.client.post(f"/api/v1/computations/{cid}/cancel", headers=env.h()).status_code == 200
    r = env.client.delete(f"/api/v1/hosts/{hid}", headers=env.h())
    assert r.status_code == 200 and r.json()["state"] == "removed", r.text
    d = env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()
    # nobody will report the enclave gone: destroyed, the outcome (cancelled) kept
    assert d["state"] == "destroyed" and d["outcome"] == "failed", d
    assert "h1" not in _hosts(env)
    r = env.client.post(
        "/api/v1/agent/heartbeat", json={"resources": {}, "enclaves": []}, headers=env.h(cred)
    )
    assert r.status_code == 401, r.text
    # the capacity is gone with it: nothing is placed on a removed host
    env.create(manifest_doc(env.parties), expect=429)
    assert env.client.delete(f"/api/v1/hosts/{hid}", headers=env.h()).status_code == 404


def test_lost_host_with_a_failed_run_can_be_removed(env: Env) -> None:
    """A lost host's failed computation holds its capacity "until that host says the
    enclave is gone", which a dead host never does: removal must not wait for it."""
    hid, cred = env.agent("h1", cpus=4)
    _, cred2 = env.agent("h2", cpus=1)
    cid = env.create(manifest_doc(env.parties, vcpus=2))["id"]
    env.heartbeat(cred, [reached(cid, "running")])
    env.clock.advance(16)
    env.heartbeat(cred2)
    env.cp.tick()
    assert _hosts(env)["h1"]["state"] == "lost" and env.state(cid) == "failed"
    r = env.client.delete(f"/api/v1/hosts/{hid}", headers=env.h())
    assert r.status_code == 200, r.text
    assert env.state(cid) == "destroyed"


def test_drain_and_remove_are_admin_only_and_name_must_be_unique(env: Env) -> None:
    env.agent("twin")
    env.agent("twin")
    _, key = env.user("bob")
    r = env.client.post("/api/v1/hosts/twin/drain", json={"draining": True}, headers=env.h(key))
    assert r.status_code == 403, r.text
    assert env.client.delete("/api/v1/hosts/twin", headers=env.h(key)).status_code == 403
    r = env.client.delete("/api/v1/hosts/twin", headers=env.h())
    assert r.status_code == 409 and r.json()["type"] == "host-name-ambiguous", r.text
    assert env.client.delete("/api/v1/hosts/nosuch", headers=env.h()).status_code == 404
