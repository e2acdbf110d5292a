"""Fixtures shared by the service tests: a SEALROOM_HOME, two TCP echo servers."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("SEALROOM_HOME", str(h))
    return h


class _Echo(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(100)
        self.request.sendall(b"pong:" + data)


@pytest.fixture
def echo_servers() -> Iterator[tuple[int, int]]:
    """Two plain TCP servers on the host's loopback: one allow-listed, one not."""
    servers = [_Echo(("127.0.0.1", 0), _EchoHandler) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield servers[0].server_address[1], servers[1].server_address[1]
    for s in servers:
        s.shutdown()
        s.server_close()
