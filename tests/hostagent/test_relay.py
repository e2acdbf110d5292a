"""The TCP -> Unix socket relay: byte-for-byte, concurrent, large, half-close, clean ends.
(TLS verification through it with the real EnclaveClient: tests/runtime/
test_runtime_unix_outbox.py and tests/hostagent/test_agent.py.)"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sealroom.hostagent.relay import TcpToUnixRelay


class EchoServer:
    """A Unix-socket server that echoes until EOF, then half-closes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(512)
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sr-relay-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def echo(sockdir: Path) -> Iterator[EchoServer]:
    srv = EchoServer(sockdir / "echo.sock")
    yield srv
    srv.close()


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        got = bytearray()

        def reader() -> None:
            while data := s.recv(1 << 16):
                got.extend(data)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # half-close: the echo answers everything, then EOF
        t.join(60)
        assert not t.is_alive()
        return bytes(got)


def test_large_transfer_is_byte_for_byte(echo: EchoServer) -> None:
    payload = os.urandom(24 << 20)
    with TcpToUnixRelay(echo.path) as relay:
        assert relay.endpoint == f"https://127.0.0.1:{relay.port}"
        got = _roundtrip(relay.port, payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_many_concurrent_connections(echo: EchoServer) -> None:
    with TcpToUnixRelay(echo.path) as relay, ThreadPoolExecutor(32) as pool:
        payloads = [os.urandom(1000 + 997 * i) for i in range(200)]
        results = list(pool.map(lambda p: _roundtrip(relay.port, p), payloads))
        assert results == payloads
        assert relay.connections == 200
    assert echo.accepted == 200


def test_connections_beyond_the_cap_are_closed_not_queued(echo: EchoServer) -> None:
    with TcpToUnixRelay(echo.path, max_connections=2) as relay:
        held = [socket.create_connection(("127.0.0.1", relay.port)) for _ in range(2)]
        for s in held:  # both are relayed
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        extra = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        assert extra.recv(1) == b""  # closed at once
        extra.close()
        for s in held:
            s.close()
        # slots come back once the held connections ended
        for _ in range(100):
            with contextlib.suppress(AssertionError, OSError):
                assert _roundtrip(relay.port, b"again") == b"again"
                break
            time.sleep(0.05)
        else:
            raise AssertionError("relay slots were not released")


def test_unreachable_enclave_socket_closes_the_client(sockdir: Path) -> None:
    with TcpToUnixRelay(sockdir / "nobody.sock") as relay:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
            assert s.recv(1) == b""
        # and the relay goes on serving
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
            assert s.recv(1) == b""


def test_server_closing_ends_the_client_connection(sockdir: Path) -> None:
    path = sockdir / "closer.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)
    with TcpToUnixRelay(path) as relay:
        c = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        conn, _ = srv.accept()
        conn.sendall(b"bye")
        conn.close()
        assert c.recv(10) == b"bye"
        assert c.recv(10) == b""
        c.close()
    srv.close()


def test_stop_releases_the_port(echo: EchoServer) -> None:
    relay = TcpToUnixRelay(echo.path).start()
    port = relay.port
    relay.stop()
    again = TcpToUnixRelay(echo.path, port=port).start()  # the same port binds again
    try:
        assert _roundtrip(again.port, b"hi") == b"hi"
    finally:
        again.stop()


def test_small_request_response_does_not_stall_on_nagle(echo: EchoServer) -> None:
    """Many small split writes and round trips on one connection come through whole
    (the relay's TCP side runs with TCP_NODELAY, so none waits for a delayed ACK)."""
    with TcpToUnixRelay(echo.path) as relay:
        s = socket.create_connection(("127.0.0.1", relay.port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with s:
            for i in range(50):
                msg = b"ping %d" % i
                s.sendall(msg[:3])
                s.sendall(msg[3:])
                got = b""
                while len(got) < len(msg):
                    got += s.recv(64)
                assert got == msg


def test_listen_and_advertise_addresses(echo: EchoServer) -> None:
    """`--listen` binds that address only; `--advertise` is what parties are told."""
    with TcpToUnixRelay(echo.path, host="127.0.0.3", advertise="hospital-b.example") as relay:
        assert relay.endpoint == f"https://hospital-b.example:{relay.port}"
        with socket.create_connection(("127.0.0.3", relay.port), timeout=10) as s:
            s.sendall(b"ping")
            assert s.recv(4) == b"ping"
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", relay.port), 5),
        ):
            pass
    with TcpToUnixRelay(echo.path, host="127.0.0.3") as relay:
        assert relay.endpoint == f"https://127.0.0.3:{relay.port}"
