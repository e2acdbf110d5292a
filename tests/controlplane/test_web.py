"""The dashboard (docs/adr/0036) over HTTP: sessions, CSRF, authorization, pages.

The browser itself drives it in tests/integration/test_dashboard_browser.py; here every
check is exercised with its negative case through the app's real routes."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sealroom.controlplane.web import COOKIE
from sealroom.manifest import Manifest
from sealroom.testing.receipts import sim_receipt
from tests.controlplane.conftest import Env, manifest_doc

PAGES = ["/ui/computations", "/ui/hosts", "/ui/verify", "/ui/computations/cmp_x"]


def login(client: TestClient, key: str, next_: str = "") -> Any:
    page = client.get("/ui/login")
    assert page.status_code == 200
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert token is not None
    return client.post(
        "/ui/login",
        data={"api_key": key, "login_csrf": token.group(1), "next": next_},
        follow_redirects=False,
    )


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m is not None, "page has no CSRF field"
    return m.group(1)


def browser(env: Env, key: str) -> TestClient:
    """A second client on the same app (its own cookie jar), logged in with ``key``."""
    c = TestClient(env.client.app)
    r = login(c, key)
    assert r.status_code == 303, r.text
    return c


@pytest.mark.parametrize("path", PAGES)
def test_no_session_redirects_to_login(env: Env, path: str) -> None:
    r = env.client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/ui/login?next=")


def test_forged_session_cookie_redirects_to_login(env: Env) -> None:
    c = TestClient(env.client.app, cookies={COOKIE: "not-a-session"})
    r = c.get("/ui/computations", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")


def test_login_sets_strict_httponly_cookie(env: Env) -> None:
    r = login(env.client, env.admin_key, "/ui/hosts")
    assert r.status_code == 303 and r.headers["location"] == "/ui/hosts"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(COOKIE + "="))
    low = cookie.lower()
    assert "httponly" in low and "samesite=strict" in low and "path=/ui" in low
    assert "secure" not in low  # plain HTTP: a Secure cookie would never come back
    assert env.admin_key not in cookie  # the key itself never goes into the cookie
    assert env.client.get("/ui/hosts").status_code == 200


def test_login_over_tls_sets_secure_cookie(env: Env) -> None:
    c = TestClient(env.client.app, base_url="https://testserver")
    r = login(c, env.admin_key)
    cookie = next(x for x in r.headers.get_list("set-cookie") if x.startswith(COOKIE + "="))
    assert "secure" in cookie.lower()


def test_login_wrong_key_refused(env: Env) -> None:
    r = login(env.client, "srk_nobody_issued_this")
    assert r.status_code == 401
    assert "not recognised" in r.text
    assert not any(c.startswith(COOKIE + "=") for c in r.headers.get_list("set-cookie"))


def test_login_without_login_csrf_refused(env: Env) -> None:
    r = env.client.post(
        "/ui/login", data={"api_key": env.admin_key, "login_csrf": "x"}, follow_redirects=False
    )
    assert r.status_code == 403 and "csrf" in r.text.lower()


def test_login_next_to_another_origin_ignored(env: Env) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/api/v1/me"):
        r = login(TestClient(env.client.app), env.admin_key, target)
        assert r.headers["location"] == "/ui/computations", target


def test_pages_carry_security_headers(env: Env) -> None:
    login(env.client, env.admin_key)
    r = env.client.get("/ui/computations")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    # every script and stylesheet is this origin's
    assert not re.search(r'(src|href)="(https?:)?//', r.text)


def test_csrf_missing_refused(env: Env) -> None:
    env.agent()
    login(env.client, env.admin_key)
    doc = manifest_doc(env.parties)
    r = env.client.post(
        "/ui/computations", data={"manifest_text": json.dumps(doc)}, follow_redirects=False
    )
    assert r.status_code == 403 and "csrf-token-invalid" in r.text
    assert env.client.get("/api/v1/computations", headers=env.h()).json()["computations"] == []
    # wrong token (another session's) is refused too
    other = browser(env, env.admin_key)
    wrong = csrf_of(other.get("/ui/computations").text)
    r = env.client.post(
        "/ui/computations",
        data={"manifest_text": json.dumps(doc), "csrf": wrong},
        follow_redirects=False,
    )
    assert r.status_code == 403
    # with the page's token it is created
    token = csrf_of(env.client.get("/ui/computations").text)
    r = env.client.post(
        "/ui/computations",
        data={"manifest_text": json.dumps(doc), "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    cid = r.headers["location"].rsplit("/", 1)[1]
    # cancel and logout need it as well
    r = env.client.post(f"/ui/computations/{cid}/cancel", follow_redirects=False)
    assert r.status_code == 403
    assert env.state(cid) != "failed"
    r = env.client.post("/ui/logout", follow_redirects=False)
    assert r.status_code == 403
    r = env.client.post(f"/ui/computations/{cid}/cancel", data={"csrf": token})
    assert r.status_code == 200 and "cancelled" in r.text
    assert env.state(cid) == "failed"


def test_other_accounts_computation_not_shown(env: Env) -> None:
    env.agent()
    _, key_a = env.user("hospital-a")
    _, key_b = env.user("hospital-b")
    cid = env.create(manifest_doc(env.parties), key_a)["id"]
    a, b = browser(env, key_a), browser(env, key_b)
    assert cid in a.get("/ui/computations").text
    assert cid not in b.get("/ui/computations").text
    for path in ("", "/evidence", "/receipt", "/live"):
        r = b.get(f"/ui/computations/{cid}{path}")
        assert r.status_code == 404, path
        assert "sum of two private numbers" not in r.text
    token = csrf_of(b.get("/ui/computations").text)
    assert b.post(f"/ui/computations/{cid}/cancel", data={"csrf": token}).status_code == 404
    assert env.state(cid) == "scheduled"
    # and a user is no admin here either
    assert b.get("/ui/hosts").status_code == 403


def test_revoked_key_ends_its_sessions(env: Env) -> None:
    acc, key = env.user("hospital-a")
    c = browser(env, key)
    assert c.get("/ui/computations").status_code == 200
    kid = env.client.get("/api/v1/me", headers=env.h(key)).json()
    assert kid["account_id"] == acc
    keys = env.cp.auth.authenticate_user(key).key_id
    assert env.client.delete(f"/api/v1/keys/{keys}", headers=env.h()).status_code == 204
    r = c.get("/ui/computations", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")


def test_logout_ends_session(env: Env) -> None:
    login(env.client, env.admin_key)
    token = csrf_of(env.client.get("/ui/computations").text)
    old = env.client.cookies.get(COOKIE)
    r = env.client.post("/ui/logout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    replay = TestClient(env.client.app, cookies={COOKIE: old or ""})
    assert replay.get("/ui/computations", follow_redirects=False).status_code == 303


def test_hosts_page_says_verified_or_claimed(env: Env) -> None:
    _, cred = env.agent("h1", tee=("sim", "snp"))
    cid = env.create(manifest_doc(env.parties))["id"]
    login(env.client, env.admin_key)
    page = env.client.get("/ui/hosts").text
    assert "snp claimed, not verified" in page and "sim claimed, not verified" in page
    env.heartbeat(cred, [{"computation_id": cid, "state": "launching"}])
    env.complete(cred, cid)
    page = env.client.get("/ui/hosts").text
    assert "sim (SIMULATED) verified" in page  # sim evidence verifies sim, never snp
    assert "snp claimed, not verified" in page


def test_evidence_and_receipt_pages(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    login(env.client, env.admin_key)
    assert "No receipt yet" in env.client.get(f"/ui/computations/{cid}/receipt").text
    env.heartbeat(cred, [{"computation_id": cid, "state": "launching"}])
    env.complete(cred, cid)
    ev = env.client.get(f"/ui/computations/{cid}/evidence").text
    assert 'class="simulated"' in ev and "SIMULATED" in ev
    assert '<th scope="col">Got</th>' in ev and '<th scope="col">Want</th>' in ev
    assert "every rule passed" in ev
    rc = env.client.get(f"/ui/computations/{cid}/receipt").text
    assert "Receipt verified" in rc and "completed" in rc
    # the transparency log holds it; the proof checked against the signed checkpoint
    assert 'id="tlog-ok"' in rc and "inclusion proof verifies" in rc
    detail = env.client.get(f"/ui/computations/{cid}").text
    assert 'id="state"' in detail and ">completed<" in detail


def test_verify_page_refuses_forged_receipt(env: Env) -> None:
    env.agent()
    doc = manifest_doc(env.parties)
    cid = env.create(doc)["id"]
    good = env.receipt(cid)
    login(env.client, env.admin_key)
    token = csrf_of(env.client.get("/ui/verify").text)
    mbytes = json.dumps(
        env.client.get(f"/api/v1/computations/{cid}", headers=env.h()).json()["manifest"]
    ).encode()

    def verify(receipt: bytes, csrf: str = token) -> Any:
        return env.client.post(
            "/ui/verify",
            data={"csrf": csrf},
            files={
                "receipt_file": ("receipt.json", receipt, "application/json"),
                "manifest_file": ("manifest.json", mbytes, "application/json"),
            },
        )

    r = verify(good)
    assert r.status_code == 200 and "Receipt verified" in r.text and "SIMULATED" in r.text
    forged = json.loads(good)
    forged["payload"]["exit"]["reason"] = "forged"
    r = verify(json.dumps(forged).encode())
    assert "Receipt NOT verified" in r.text and "Receipt verified" not in r.text
    r = verify(b"not json")
    assert "Receipt NOT verified" in r.text and "receipt-malformed" in r.text
    assert verify(good, csrf="").status_code == 403


def test_docs_and_redoc_load_no_cdn(env: Env) -> None:
    for path in ("/docs", "/redoc"):
        html = env.client.get(path).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, path
        for a in assets:
            assert a.startswith("/"), f"{path} loads {a} from another origin"
            assert env.client.get(a).status_code == 200, a
        assert "cdn" not in html and "fonts.googleapis" not in html


def test_verify_page_shows_failed_rules_of_a_rejected_policy(env: Env) -> None:
    """Authentic evidence the manifest's policy rejects: not verified, and the table
    still shows each rule, the failing ones marked FAIL (a verdict with its reasons)."""
    assert env.authority is not None
    doc = manifest_doc(env.parties)
    doc["policy"]["allow_simulated"] = False
    receipt = sim_receipt(Manifest.from_dict(doc), env.authority, now=env.clock())
    login(env.client, env.admin_key)
    token = csrf_of(env.client.get("/ui/verify").text)
    r = env.client.post(
        "/ui/verify",
        data={"csrf": token},
        files={
            "receipt_file": ("receipt.json", json.dumps(receipt).encode(), "application/json"),
            "manifest_file": ("manifest.json", json.dumps(doc).encode(), "application/json"),
        },
    )
    assert r.status_code == 200
    assert "Receipt NOT verified" in r.text and "policy-violation" in r.text
    assert re.search(r'<tr class="fail"><td>simulated</td>', r.text)
    assert "rule(s) failed" in r.text and 'class="simulated"' in r.text


def test_receipt_page_says_when_log_does_not_hold_it(env: Env) -> None:
    """A receipt blob the log never saw (here: written behind the control plane's back)
    is shown as not logged, never as logged."""
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [{"computation_id": cid, "state": "launching"}])
    data = env.receipt(cid)
    env.cp.blobs.put(cid, "receipt", [data], hashlib.sha256(data).hexdigest())
    login(env.client, env.admin_key)
    rc = env.client.get(f"/ui/computations/{cid}/receipt").text
    assert "does not hold this receipt" in rc and 'id="tlog-ok"' not in rc


def test_hosts_page_drains_resumes_and_removes_a_host(env: Env) -> None:
    """Issue 15: the operator's drain/remove from the dashboard, behind CSRF and the admin
    role; a busy host's removal is refused with the reason."""
    hid, cred = env.agent("h1")
    cid = env.create(manifest_doc(env.parties))["id"]
    env.heartbeat(cred, [{"computation_id": cid, "state": "launching"}])
    login(env.client, env.admin_key)
    page = env.client.get("/ui/hosts").text
    assert 'aria-label="Drain host h1"' in page
    token = csrf_of(page)
    r = env.client.post(f"/ui/hosts/{hid}/drain", data={"draining": "1"}, follow_redirects=False)
    assert r.status_code == 403 and "csrf-token-invalid" in r.text  # no token: nothing done
    r = env.client.post(f"/ui/hosts/{hid}/drain", data={"draining": "1", "csrf": token})
    assert r.status_code == 200 and 'aria-label="Resume host h1"' in r.text
    assert "draining" in r.text
    r = env.client.post(f"/ui/hosts/{hid}/remove", data={"csrf": token})
    assert r.status_code == 409 and "host-busy" in r.text and cid in r.text
    env.client.post(f"/ui/computations/{cid}/cancel", data={"csrf": token})
    r = env.client.post(f"/ui/hosts/{hid}/remove", data={"csrf": token})
    assert r.status_code == 200 and "h1" not in r.text.split("<tbody>")[1]
    # a user account may not, even with its own valid session and token
    hid2, _ = env.agent("h2")
    _, key = env.user("bob")
    bob = browser(env, key)
    bob_token = csrf_of(bob.get("/ui/computations").text)
    r = bob.post(f"/ui/hosts/{hid2}/remove", data={"csrf": bob_token}, follow_redirects=False)
    assert r.status_code == 403
    assert "h2" in env.client.get("/ui/hosts").text
