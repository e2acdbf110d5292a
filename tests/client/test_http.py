"""The one typed client of the untrusted side (sealroom.client.http, ADR 0016), against the
real control plane app served by uvicorn on 127.0.0.1: errors keep their class and exit
code across HTTP, answers are the contract's models, idempotent calls are retried."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import BaseModel

from sealroom.client.controlplane import ControlPlaneClient
from sealroom.client.http import ApiClient
from sealroom.controlplane.app import create_app
from sealroom.controlplane.config import Settings
from sealroom.errors import (
    PolicyViolationError,
    SealroomError,
    UnavailableError,
    error_classes,
    error_from_problem,
)
from sealroom.protocol.api import MeOut
from sealroom.protocol.lifecycle import State


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make(cls: type[SealroomError], message: str, code: str) -> SealroomError:
    if issubclass(cls, PolicyViolationError):
        return cls(message, None, code=code)
    return cls(message, code=code)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The control plane app, plus one route that raises the error class it is asked for."""
    data = tmp_path_factory.mktemp("cp")
    app = create_app(Settings(data_dir=data, tick_interval=0, print_bootstrap_key=False))

    def raise_(code: str, specific: str = "") -> None:
        cls = error_classes()[code]
        raise _make(cls, f"{code} raised on purpose", specific or cls.code)

    app.add_api_route("/test/raise/{code}", raise_, methods=["GET"])
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.05)
    admin = (data / "bootstrap-admin-key").read_text().strip()
    yield f"http://127.0.0.1:{port}", admin
    server.should_exit = True
    t.join(10)


@pytest.mark.parametrize("code", sorted(error_classes()))
def test_problem_type_keeps_error_class_across_http(served: tuple[str, str], code: str) -> None:
    url, _ = served
    cls = error_classes()[code]
    with ApiClient(url) as c, pytest.raises(SealroomError) as e:
        c.request("GET", f"/test/raise/{code}?specific=some-{code}-detail")
    assert type(e.value) is cls
    assert e.value.exit_code == cls.exit_code
    assert e.value.code == f"some-{code}-detail"  # the specific type survives too
    assert f"{code} raised on purpose" in e.value.message


def test_error_class_defined_outside_errors_travels_as_its_base(served: tuple[str, str]) -> None:
    url, _ = served
    with ApiClient(url) as c, pytest.raises(SealroomError) as e:
        c.request("GET", "/api/v1/me")  # no credential: auth's 401
    assert e.value.code == "unauthenticated" and e.value.exit_code == 1
    assert type(e.value).__name__ == "UnauthenticatedError"


@pytest.mark.parametrize(
    ("status", "body", "want"),
    [
        (422, b'{"type": "binding-mismatch", "error": "attestation-failed"}', "AttestationError"),
        (422, b'{"type": "policy-violation", "detail": "x"}', "PolicyViolationError"),
        (429, b'{"type": "quota-exceeded"}', "CapacityError"),  # unknown type: by status
        (502, b"<html>bad gateway</html>", "UnavailableError"),  # not JSON at all
        (418, b"", "InvalidInputError"),
    ],
)
def test_problem_without_a_known_type_falls_back_by_status(
    status: int, body: bytes, want: str
) -> None:
    assert type(error_from_problem(status, body)).__name__ == want


def test_typed_client_answers_with_the_contracts_models(served: tuple[str, str]) -> None:
    url, admin = served
    cp = ControlPlaneClient(url, admin)
    me = cp.me()
    assert isinstance(me, MeOut) and me.role == "admin"
    assert cp.computations() == []
    assert cp.compute_status().status in ("operational", "degraded", "maintenance")
    assert cp.healthy()


class _Flaky(BaseHTTPRequestHandler):
    """503 for the first ``fail`` requests, then a JSON answer; counts every request."""

    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn
    fail = 0
    seen: list[str] = []  # noqa: RUF012 - per-test state, reset by the fixture
    answer = b'{"account_id": "a", "name": "n", "role": "user"}'

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self) -> None:
        type(self).seen.append(self.command)
        if len(type(self).seen) <= type(self).fail:
            body = b'{"type": "unavailable", "status": 503, "detail": "busy"}'
            self.send_response(503)
        else:
            body = type(self).answer
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _reply
    do_POST = _reply


@pytest.fixture
def flaky() -> Iterator[str]:
    _Flaky.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_idempotent_call_is_retried_with_backoff_then_succeeds(flaky: str) -> None:
    _Flaky.fail = 2
    with ApiClient(flaky, retries=2, backoff=0.01) as c:
        assert c.model("GET", "/me", MeOut).name == "n"
    assert _Flaky.seen == ["GET", "GET", "GET"]


def test_retries_are_bounded(flaky: str) -> None:
    _Flaky.fail = 10
    with ApiClient(flaky, retries=2, backoff=0.01) as c, pytest.raises(UnavailableError):
        c.request("GET", "/me")
    assert len(_Flaky.seen) == 3


def test_non_idempotent_call_is_not_retried(flaky: str) -> None:
    _Flaky.fail = 1
    with ApiClient(flaky, retries=2, backoff=0.01) as c, pytest.raises(UnavailableError):
        c.request("POST", "/api/v1/computations", json={})
    assert _Flaky.seen == ["POST"]


class _Other(BaseModel):
    must_have: int


def test_answer_that_breaks_the_contract_is_unavailable_not_a_crash(flaky: str) -> None:
    _Flaky.fail = 0
    with ApiClient(flaky) as c, pytest.raises(UnavailableError) as e:
        c.model("GET", "/me", _Other)
    assert e.value.code == "bad-response" and "must_have" in e.value.message


def test_connection_is_reused_across_calls(flaky: str) -> None:
    _Flaky.fail = 0
    peers: set[tuple[str, int]] = set()
    orig = _Flaky._reply

    def spy(self: _Flaky) -> None:
        peers.add(self.client_address)
        orig(self)

    _Flaky.do_GET = spy
    try:
        with ApiClient(flaky) as c:
            for _ in range(5):
                c.request("GET", "/me")
    finally:
        _Flaky.do_GET = orig
    assert len(peers) == 1  # one TCP connection for five calls (keep-alive)


def test_unreachable_control_plane_is_unavailable() -> None:
    port = _free_port()
    client = ApiClient(f"http://127.0.0.1:{port}", retries=1, backoff=0.01)
    with client as c, pytest.raises(UnavailableError) as e:
        c.request("GET", "/healthz")
    assert e.value.exit_code == 3


def test_wait_for_returns_a_lifecycle_state(served: tuple[str, str], tmp_path: Path) -> None:
    url, admin = served
    cp = ControlPlaneClient(url, admin)
    account = cp.create_account(f"acct-{time.monotonic_ns()}")
    assert cp.create_key(account.id).key.startswith("srk_")
    assert State.DESTROYED.final  # the client stops waiting on the protocol's FINAL
