"""What reads right for users and operators (issue 15): final states that say what
happened and keep it after destroy, accounts listed, quiet heartbeats, /metrics token."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from sealroom.protocol.controlplane import party_view_message, result_request_message
from tests.controlplane.conftest import Env, manifest_doc
from tests.controlplane.reports import reached, stopped


def detail(env: Env, cid: str) -> dict[str, object]:
    r = env.client.get(f"/api/v1/computations/{cid}", headers=env.h())
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()
    return out


def test_failed_reason_kept_after_destroy(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [reached(cid, "failed", "the algorithm exited with status 3")])
    d = detail(env, cid)
    assert d["status"] == "failed: the algorithm exited with status 3"
    env.heartbeat(cred, [stopped(cid)])
    d = detail(env, cid)
    assert d["state"] == "destroyed" and d["outcome"] == "failed"
    # the outcome's reason is not overwritten by the destruction's
    assert d["reason"] == "the algorithm exited with status 3"
    assert d["status"] == "failed: the algorithm exited with status 3 (enclave destroyed)"


def test_completed_kept_after_destroy(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [reached(cid, "running")])
    env.complete(cred, cid)
    assert detail(env, cid)["status"] == "completed"
    env.heartbeat(
        cred,
        [{"computation_id": cid, "transitions": [{"state": "destroyed", "reason": "stopped"}]}],
    )
    d = detail(env, cid)
    assert d["state"] == "destroyed" and d["status"] == "completed (enclave destroyed)"


def test_cancel_reads_cancelled(env: Env) -> None:
    env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    r = env.client.post(f"/api/v1/computations/{cid}/cancel", headers=env.h())
    assert r.status_code == 200
    d = detail(env, cid)
    assert d["status"] == "cancelled" and d["reason"] == "cancelled by admin"
    listed = env.client.get("/api/v1/computations", headers=env.h()).json()["computations"]
    assert listed[0]["status"] == "cancelled"


def test_accounts_listed_admin_all_user_own(env: Env) -> None:
    acc_a, key_a = env.user("hospital-a")
    env.user("hospital-b")
    names = [
        a["name"] for a in env.client.get("/api/v1/accounts", headers=env.h()).json()["accounts"]
    ]
    assert names == ["admin", "hospital-a", "hospital-b"]
    mine = env.client.get("/api/v1/accounts", headers=env.h(key_a)).json()["accounts"]
    assert mine == [{"id": acc_a, "name": "hospital-a", "role": "user"}]
    assert env.client.get("/api/v1/accounts").status_code == 401


def test_heartbeats_logged_at_debug(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    _, cred = env.agent()
    with caplog.at_level(logging.DEBUG, logger="sealroom.controlplane"):
        env.heartbeat(cred)
        env.client.post("/api/v1/agent/heartbeat", json={"resources": {}, "enclaves": []})
    hb = [r for r in caplog.records if getattr(r, "route", "") == "/api/v1/agent/heartbeat"]
    assert [(r.levelno, getattr(r, "status", 0)) for r in hb] == [
        (logging.DEBUG, 200),
        (logging.INFO, 401),  # a refused heartbeat is worth an operator's attention
    ]


def test_metrics_token_required_when_set(make_env: Callable[..., Env]) -> None:
    open_env = make_env()
    assert open_env.client.get("/metrics").status_code == 200
    env = make_env(metrics_token="scrape-secret-123")
    assert env.client.get("/metrics").status_code == 401
    r = env.client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    # an API key, even the admin's, is not the metrics token
    assert env.client.get("/metrics", headers=env.h()).status_code == 401
    r = env.client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-123"})
    assert r.status_code == 200 and "sealroom_computations" in r.text


def _party_view(env: Env, cid: str, party: str, key_name: str | None = None,
                message: Callable[..., bytes] | None = None) -> Any:  # fmt: skip
    """GET party-view as ``party``, signing with ``key_name``'s key (default: its own)."""
    ch = env.client.get(f"/api/v1/computations/{cid}/challenge").json()["challenge"]
    d = env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()
    msg = (message or party_view_message)(
        cid, bytes.fromhex(d["manifest_hash"]), party, bytes.fromhex(ch)
    )
    sig = env.parties[key_name or party].sign(msg).hex()
    return env.client.get(
        f"/api/v1/computations/{cid}/party-view",
        params={"party": party},
        headers={"X-Sealroom-Challenge": ch, "X-Sealroom-Signature": sig},
    )


def test_party_named_in_manifest_sees_public_state(env: Env) -> None:
    """Issue 15: a data provider of another organisation sees the computation's public
    state by signing a challenge with its manifest key, without an account."""
    _, cred = env.agent()
    _, key_a = env.user("hospital-a")
    cid = env.create(manifest_doc(env.parties), key_a)["id"]
    env.heartbeat(cred, [reached(cid, "awaiting_inputs")])
    for party in ("dp1", "algo", "alice", "bob"):
        r = _party_view(env, cid, party)
        assert r.status_code == 200, (party, r.text)
        v = r.json()
        assert v["party"] == party and v["status"] == "awaiting_inputs"
        assert v["slots"] == [
            {"name": "algorithm", "filled": False},
            {"name": "a", "filled": False},
        ]
        assert v["receipt"] is False and "manifest" not in v


@pytest.mark.parametrize(
    "case", ["party_not_in_manifest", "signed_by_another_key", "result_request_signature"]
)
def test_party_view_refused(env: Env, case: str) -> None:
    env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    if case == "party_not_in_manifest":
        r = _party_view(env, cid, "mallory")
    elif case == "signed_by_another_key":
        r = _party_view(env, cid, "dp1", key_name="mallory")
    else:  # a signature for downloading results is not one for the party view
        r = _party_view(env, cid, "alice", message=result_request_message)
    assert r.status_code == 403 and r.json()["type"] == "access-denied"
    assert "awaiting" not in r.text and "scheduled" not in r.text


def test_party_view_challenge_is_one_time(env: Env) -> None:
    env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    ch = env.client.get(f"/api/v1/computations/{cid}/challenge").json()["challenge"]
    d = env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()
    sig = env.parties["dp1"].sign(
        party_view_message(cid, bytes.fromhex(d["manifest_hash"]), "dp1", bytes.fromhex(ch))
    )
    h = {"X-Sealroom-Challenge": ch, "X-Sealroom-Signature": sig.hex()}
    url = f"/api/v1/computations/{cid}/party-view?party=dp1"
    assert env.client.get(url, headers=h).status_code == 200
    assert env.client.get(url, headers=h).status_code == 403  # replayed
    assert env.client.get(url).status_code == 403  # no signature at all
    assert (
        env.client.get("/api/v1/computations/cmp_nope/party-view?party=dp1", headers=h).status_code
        == 404
    )
