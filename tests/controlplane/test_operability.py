"""What reads right for users and operators (issue 15): final states that say what
happened and keep it after destroy, accounts listed, quiet heartbeats, /metrics token."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

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
