"""`sealroom up --tls` (issue 15, docs/adr/0037): the control plane speaks HTTPS with a
self-signed certificate; the CLI and the agents trust exactly that certificate (a pin);
a client that does not hold it is refused, and so is one pinned to another certificate."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from sealroom.client.http import tls_verify
from sealroom.controlplane.tls import fingerprint, self_signed

from ._party import cli, needs_bwrap

pytestmark = needs_bwrap


def test_up_tls_pins_its_certificate(tmp_path: Path, env: dict[str, str]) -> None:
    r = cli("up", "--tls", "--json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        up = json.loads(r.stdout)
        url = up["url"]
        assert url.startswith("https://127.0.0.1:")
        crt = Path(up["data_dir"]) / "controlplane" / "tls" / "tls.crt"
        assert up["tls_sha256"] == fingerprint(crt.read_bytes())
        assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", up["tls_sha256"])
        key = Path(up["data_dir"]) / "controlplane" / "tls" / "tls.key"
        assert key.stat().st_mode & 0o077 == 0
        # the pinned CLI and the agent (it registered over TLS) work
        r = cli("host", "list", "--json", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert [h["state"] for h in json.loads(r.stdout)] == ["online"]
        # a client without the pin: refused by certificate verification, nothing sent
        bare = {**env, "SEALROOM_URL": url, "SEALROOM_API_KEY": up["admin_key"]}
        r = cli("host", "list", env=bare, cwd=tmp_path)
        assert r.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, r.stderr
        # pinned to another certificate (a man in the middle's, say): refused too
        other, _ = self_signed(tmp_path / "other")
        r = cli("host", "list", env={**bare, "SEALROOM_CA_CERT": str(other)}, cwd=tmp_path)
        assert r.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, r.stderr
        r = cli("host", "list", env={**bare, "SEALROOM_CA_CERT": str(crt)}, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        # a second machine's CLI: login with the operator's certificate file, key on stdin
        env2 = {**env, "SEALROOM_HOME": str(tmp_path / "home2")}
        r = subprocess.run(
            [sys.executable, "-m", "sealroom.cli.main", "login", url, "--ca-cert", str(crt)],
            input=up["admin_key"] + "\n", env=env2, cwd=tmp_path, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert cli("account", "list", env=env2, cwd=tmp_path).returncode == 0
        # the dashboard's session cookie is Secure over TLS
        with httpx.Client(verify=tls_verify(crt), base_url=url) as c:
            page = c.get("/ui/login")
            token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
            assert token is not None
            r2 = c.post(
                "/ui/login",
                data={"api_key": up["admin_key"], "login_csrf": token.group(1)},
                follow_redirects=False,
            )
            assert r2.status_code == 303
            cookie = next(
                x for x in r2.headers.get_list("set-cookie") if x.startswith("sealroom_session=")
            )
            assert "secure" in cookie.lower() and "httponly" in cookie.lower()
    finally:
        cli("down", env=env, cwd=tmp_path)


def test_second_party_on_another_address_verifies_and_uploads(
    workspace: Path, env: dict[str, str]
) -> None:
    """Issue 15, "done means": the enclave listens on another address of the loopback
    range (another machine's interface); a second hospital with only its own key, no
    account, and the operator's certificate checks the computation's state over TLS,
    verifies the enclave there and uploads; the analyst gets the result."""
    w = workspace
    r = cli(
        "up", "--tls", "--enclave-listen", "127.0.0.2", "--enclave-advertise", "127.0.0.2",
        "--json", env=env, cwd=w,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        up = json.loads(r.stdout)
        crt = Path(up["data_dir"]) / "controlplane" / "tls" / "tls.crt"
        r = cli("computation", "create", "manifest.json", "--wait", "90", "--json", env=env, cwd=w)
        assert r.returncode == 0, r.stdout + r.stderr
        comp = json.loads(r.stdout)
        enclave = comp["enclave_url"]
        assert enclave.startswith("https://127.0.0.2:"), enclave
        # the second hospital: its own home with only its own key, the operator's cert
        home2 = w / "hospital-b"
        (home2 / "keys").mkdir(parents=True, mode=0o700)
        key = Path(env["SEALROOM_HOME"]) / "keys" / "clinic-b.json"
        (home2 / "keys" / "clinic-b.json").write_bytes(key.read_bytes())
        (home2 / "keys" / "clinic-b.json").chmod(0o600)
        env2 = {
            **{k: v for k, v in env.items() if not k.startswith("SEALROOM_")},
            "SEALROOM_HOME": str(home2),
            "SEALROOM_CA_CERT": str(crt),
        }
        args = ("--manifest", "manifest.json", "--key", "clinic-b")
        r = cli("computation", "status", comp["id"], *args, "--control-plane", up["url"],
                "--json", env=env2, cwd=w)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        view = json.loads(r.stdout)
        assert view["enclave_url"] == enclave and view["state"] == "awaiting_inputs", view
        # a remote party trusts the operator's sim root only when told to (SIMULATED)
        r = cli("enclave", "verify", enclave, "--manifest", "manifest.json", env=env2, cwd=w)
        assert r.returncode == 2 and "untrusted-root" in r.stderr, r.stdout + r.stderr
        r = cli("sim", "root", env=env, cwd=w)
        assert r.returncode == 0, r.stderr
        (w / "sim-root.pem").write_text(r.stdout)
        root = ("--root", "sim-root.pem")
        r = cli("enclave", "verify", enclave, "--manifest", "manifest.json", *root,
                env=env2, cwd=w)  # fmt: skip
        assert r.returncode == 0 and "SIMULATED" in r.stdout, r.stdout + r.stderr
        r = cli("upload", enclave, "b.txt", "--slot", "clinic-b", *args, *root, env=env2, cwd=w)
        assert r.returncode == 0, r.stdout + r.stderr
        for path, slot, who in (("main.py", "algorithm", "lab"), ("a.txt", "clinic-a", "clinic-a")):
            r = cli("upload", enclave, path, "--manifest", "manifest.json", "--slot", slot,
                    "--key", who, env=env, cwd=w)  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr
        r = cli("computation", "result", comp["id"], "--manifest", "manifest.json", "--key",
                "analyst", "-o", str(w / "out"), "--wait", "90", env=env, cwd=w)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert (w / "out" / "sum.txt").read_text() == "42"
    finally:
        cli("down", env=env, cwd=w)
