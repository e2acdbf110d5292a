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
