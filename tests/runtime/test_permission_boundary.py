"""The agent permission boundary (docs/adr/0041) end to end: a service workload in the
real sandbox reaches exactly the destinations its spec grants (through its per-entry
port or the in-enclave egress proxy); every other address and port is unreachable; an
attempt through the proxy to leave the grant is a breach: the enclave signs an event
saying why, stops the workload, cuts its sessions and exits with its keys."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealroom.client.enclave import PinnedHTTPSConnection
from sealroom.client.service import ServiceClient
from sealroom.crypto.signing import verify_signed_json
from sealroom.errors import AttestationError
from sealroom.hostagent.launcher import LocalEnclave, launch_local
from sealroom.protocol.runtime_lines import BreachLine, parse_runtime_line
from sealroom.protocol.service import BREACH_DOMAIN, load_spec
from sealroom.runtime.service_main import BREACH_EXIT
from tests.runtime.test_service_e2e import _roots, sim_policy

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)

AGENT = b"""\
import os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PROXY = os.environ["SEALROOM_EGRESS_PROXY"].removeprefix("http://").split(":")

def via_proxy(target):
    s = socket.create_connection((PROXY[0], int(PROXY[1])), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n".encode())
    buf = b""
    while b"\\r\\n\\r\\n" not in buf:
        chunk = s.recv(1000)
        if not chunk:
            return "closed"
        buf += chunk
    status, rest = buf.split(b"\\r\\n", 1)[0], buf.split(b"\\r\\n\\r\\n", 1)[1]
    if b" 200 " not in status:
        return "refused " + status.decode()
    s.sendall(b"ping")
    while len(rest) < 9:
        rest += s.recv(100)
    return rest.decode()

def direct(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        return "connected"
    except OSError as e:
        return f"unreachable {type(e).__name__}"

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        u = urlsplit(self.path)
        to = parse_qs(u.query).get("to", [""])[0]
        body = {"/proxy": via_proxy, "/direct": direct}.get(u.path, lambda t: "ok")(to)
        body = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


@pytest.fixture
def agent_spec(tmp_path: Path, echo_servers: tuple[int, int]) -> Path:
    (tmp_path / "agent.py").write_bytes(AGENT)
    spec = tmp_path / "agent.json"
    spec.write_text(
        json.dumps(
            {
                "name": "agent",
                "kind": "python",
                "command": ["agent.py"],
                "port": 8080,
                "files": {"agent.py": {"source": "agent.py"}},
                "egress": [f"127.0.0.1:{echo_servers[0]}"],
                "restart": {"policy": "no"},
            }
        )
    )
    return spec


@pytest.fixture
def agent(home: Path, agent_spec: Path) -> Iterator[tuple[LocalEnclave, Path]]:
    enclave = launch_local(agent_spec, tee="sim", home=home, is_service=True)
    enclave.start_reader()
    try:
        yield enclave, agent_spec
    finally:
        enclave.stop()


def _get(c: ServiceClient, path: str) -> str:
    r = c.request("GET", path)
    assert r.status == 200, r.body
    return r.body.decode()


def test_granted_destination_reachable_every_other_not(
    agent: tuple[LocalEnclave, Path], home: Path, echo_servers: tuple[int, int]
) -> None:
    enclave, spec = agent
    allowed, other = echo_servers
    c = ServiceClient(enclave.url, sim_policy(), spec=load_spec(spec), extra_roots=_roots(home))
    c.attest()
    assert _get(c, f"/proxy?to=127.0.0.1:{allowed}") == "pong:ping"
    # Direct connections leave nothing: the sandbox's namespace has loopback only.
    for target in (f"127.0.0.1:{allowed}", f"127.0.0.1:{other}", "10.0.0.1:80", "[::1]:22"):
        assert _get(c, f"/direct?to={target}").startswith("unreachable"), target
    assert enclave.process.poll() is None  # none of that was an attempt through the proxy
    assert _get(c, "/") == "ok"


def test_leaving_the_grant_is_a_breach(
    agent_spec: Path, home: Path, echo_servers: tuple[int, int]
) -> None:
    """`sealroom service run`; the workload asks the proxy for a destination not granted:
    a signed breach event (by the attested key, naming no destination), the workload
    stopped, open sessions cut, the enclave gone, exit 6."""
    _, other = echo_servers
    server = subprocess.Popen(
        [sys.executable, "-m", "sealroom.cli.main", "service", "run", "--spec", str(agent_spec),
         "--json"],
        env={**os.environ, "SEALROOM_HOME": str(home)}, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = json.loads(server.stdout.readline())["url"]
        c = ServiceClient(url, sim_policy(), spec=load_spec(agent_spec), extra_roots=_roots(home))
        attested = c.attest()
        host, port = url.removeprefix("https://").rsplit(":", 1)
        session = PinnedHTTPSConnection(host, int(port), attested.keys.tls_spki, 30)
        session.request("GET", "/")
        assert session.getresponse().read() == b"ok"  # a kept-alive session through the front
        try:
            c.request("GET", f"/proxy?to=127.0.0.1:{other}")
        except Exception:  # noqa: S110 - the enclave may go down before it answers
            pass
        out, err = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 6, err
    assert "BREACH (egress-denied)" in err
    signed = json.loads(out.strip().splitlines()[-1])["breach"]
    payload = verify_signed_json(signed, attested.keys.ed25519_key(), BREACH_DOMAIN)
    assert payload["code"] == "egress-denied"
    assert payload["spec_hash"] == attested.spec_hash.hex()
    assert payload["keys_digest"] == attested.keys.digest.hex()
    assert str(other) not in json.dumps(payload)  # what was attempted is not published
    with pytest.raises(AttestationError):  # the event is the enclave's, not anyone's
        verify_signed_json(signed, Ed25519PrivateKey.generate().public_key(), BREACH_DOMAIN)

    def again() -> bytes:
        session.request("GET", "/")
        return session.getresponse().read()

    with pytest.raises((OSError, http.client.HTTPException)):  # the session was cut
        again()
    session.close()


def _sandbox_pid(marker: bytes) -> int:
    """A process of the sandbox whose environment carries ``marker``."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "environ").read_bytes():
                    return int(d.name)
            except OSError:
                continue
    raise AssertionError("the sandbox's processes were not found")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None,
    reason="needs root, ip (iproute2) and nsenter to put an interface into the sandbox",
)
def test_network_interface_appearing_is_a_breach(
    agent: tuple[LocalEnclave, Path], home: Path, echo_servers: tuple[int, int]
) -> None:
    """A veth pair appears in the workload's network namespace (what an escape or a
    hostile host would need to give it a way out): the sandbox is killed and the enclave
    signs why and goes."""
    enclave, spec = agent
    c = ServiceClient(enclave.url, sim_policy(), spec=load_spec(spec), extra_roots=_roots(home))
    attested = c.attest()
    assert _get(c, "/") == "ok"
    pid = _sandbox_pid(f"127.0.0.1:{echo_servers[0]}".encode())
    subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "ip", "link", "add", "v0", "type", "veth",
         "peer", "name", "v1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    assert enclave.wait(60) == BREACH_EXIT
    breach = next(
        line for line in map(parse_runtime_line, enclave.lines) if isinstance(line, BreachLine)
    )
    payload = verify_signed_json(breach.signed, attested.keys.ed25519_key(), BREACH_DOMAIN)
    assert payload["code"] == "network-interface"
    assert "v0" not in payload["message"]
