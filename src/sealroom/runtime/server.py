"""The enclave's HTTPS server: the standard library's HTTP server over the enclave's TLS
key. Deliberately minimal (no web framework in the trusted base). See protocol.py for
the endpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import socketserver
import ssl
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sealroom.errors import InvalidInputError, NotFoundError, SealroomError, to_problem
from sealroom.protocol.enclave import H_CHALLENGE, H_RESULT_SHA256, H_SHA256, H_SIGNATURE
from sealroom.protocol.enclave_api import (
    ChallengeAnswer,
    EventsAnswer,
    _Answer,
)
from sealroom.runtime.computation import Computation
from sealroom.runtime.enclave_keys import EnclaveKeys

IO_TIMEOUT = 60.0
DRAIN_LIMIT = 4 << 20  # after an early refusal, read at most this much of the unread body
DRAIN_TIMEOUT = 2.0


class _BodyReader:
    """The request body, limited to Content-Length, counting what is left unread."""

    def __init__(self, raw: Any, length: int) -> None:
        self.raw = raw
        self.remaining = length

    def read(self, n: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        want = self.remaining if n < 0 else min(n, self.remaining)
        data: bytes = self.raw.read(want)
        self.remaining -= len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` (at most what is left of the body); short only at the end of
        the connection. The buffered reader hands what it already holds, then reads the
        TLS socket straight into ``buffer``."""
        if self.remaining <= 0:
            return 0
        view = buffer[: self.remaining] if len(buffer) > self.remaining else buffer
        n: int = self.raw.readinto(view)
        self.remaining -= n
        return n


def tls_context(comp: Computation | EnclaveKeys) -> ssl.SSLContext:
    """Server context from the in-memory key: loaded through an anonymous memory file so
    the private key never touches enclave storage."""
    keys = comp if isinstance(comp, EnclaveKeys) else comp.keys
    cert, key = keys.tls_pem()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # No session tickets: a client watching the socket during an upload then sees only
    # the server's (early) response, and resumption across enclaves is impossible anyway.
    ctx.num_tickets = 0
    fd = os.memfd_create("sealroom-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, cert + key)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx


class EnclaveServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], comp: Computation) -> None:
        self.comp = comp
        self.ssl_context = tls_context(comp)
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread: a slow handshake blocks nobody else.
        # Headers and body go out as separate writes; with Nagle on, the body waits for
        # the client's delayed ACK (~40 ms per small response, bench/e2e_bench.py).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request.settimeout(IO_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            request.close()
            return
        self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """No tracebacks on the host's terminal: they could carry enclave data."""

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"https://{host!s}:{port}"


def bind_private_unix(sock: socket.socket, path: Path) -> None:
    """Bind ``sock`` at ``path``, 0600 from the moment the name exists (bound under a
    temporary name, chmod, then renamed into place)."""
    if path.is_socket():
        path.unlink()  # a stale socket from an earlier run of this enclave slot
    tmp = path.parent / f".rt-{secrets.token_hex(4)}.tmp"
    sock.bind(os.fspath(tmp))
    try:
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class UnixEnclaveServer(socketserver.ThreadingUnixStreamServer):
    """The same HTTPS service on a Unix socket (the host agent relays a TCP port to it
    byte-for-byte; TLS stays end to end). The socket file is 0600 from the moment its
    name exists: bound under a temporary name, chmod, then renamed into place."""

    daemon_threads = True

    def __init__(self, path: Path, comp: Computation) -> None:
        self.comp = comp
        self.ssl_context = tls_context(comp)
        self.socket_path = path
        super().__init__(os.fspath(path), _Handler, bind_and_activate=True)

    def server_bind(self) -> None:
        bind_private_unix(self.socket, self.socket_path)
        self.server_address = os.fspath(self.socket_path)

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(IO_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            request.close()
            return
        self.RequestHandlerClass(tls, ("unix", 0), self)  # type: ignore[arg-type]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """No tracebacks on the host's terminal: they could carry enclave data."""

    @property
    def url(self) -> str:
        return f"unix:{self.socket_path}"


AnyEnclaveServer = EnclaveServer | UnixEnclaveServer


class _Handler(BaseHTTPRequestHandler):
    server: AnyEnclaveServer
    protocol_version = "HTTP/1.1"
    server_version = "sealroom-enclave"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """No request logs: paths and parties are the enclave's business only."""

    # ---- responses ------------------------------------------------------------------
    def _json(self, status: int, obj: _Answer | dict[str, Any]) -> None:
        body = json.dumps(obj.wire() if isinstance(obj, _Answer) else obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _problem(self, e: SealroomError) -> None:
        self.close_connection = True
        body = json.dumps(to_problem(e, e.http_status, type(e).__name__)).encode()
        self.send_response(e.http_status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = [unquote(p) for p in parts.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self._body: _BodyReader | None = None
        try:
            self._route(method, path, query)
        except SealroomError as e:
            try:
                self._problem(e)
                self._drain()
            except (OSError, ssl.SSLError):  # the client is gone; nobody to tell
                self.close_connection = True
        except (OSError, ssl.SSLError):
            self.close_connection = True

    def _drain(self) -> None:
        """Closing with unread request bytes makes TCP reset the connection, and the
        client may lose our answer: read (and drop) a bounded rest of the body first.
        A client that keeps sending past that sees the answer before the reset anyway
        (it watches the socket while it uploads)."""
        body = self._body
        if body is None or body.remaining <= 0 or body.remaining > DRAIN_LIMIT:
            return
        try:
            self.connection.settimeout(DRAIN_TIMEOUT)
            while body.remaining > 0 and body.read(1 << 16):
                pass
        except (OSError, ssl.SSLError):
            pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # ---- routes ---------------------------------------------------------------------
    def _route(self, method: str, path: list[str], query: dict[str, str]) -> None:
        comp = self.server.comp
        match method, path:
            case "GET", ["attestation"]:
                nonce = query.get("nonce", "")
                try:
                    raw = bytes.fromhex(nonce)
                except ValueError as e:
                    raise InvalidInputError(f"nonce is not hex: {nonce!r}") from e
                self._json(200, comp.attestation(raw))
            case "GET", ["status"]:
                self._json(200, comp.status())
            case "GET", ["events"]:
                try:
                    after = int(query.get("after", "0"))
                    wait = float(query.get("wait", "0"))
                except ValueError as e:
                    raise InvalidInputError(f"after/wait must be numbers: {e}") from e
                self._json(
                    200, EventsAnswer.model_validate({"events": comp.events.after(after, wait)})
                )
            case "PUT", ["slots", slot]:
                self._upload(slot)
            case "GET", ["challenge"]:
                self._json(200, ChallengeAnswer(challenge=comp.challenge().hex()))
            case "GET", ["receipt"]:
                self._json(200, comp.receipt())  # signed as is (protocol/enclave_api.py)
            case "GET", ["result", consumer]:
                self._sealed(*self.server.comp.sealed_result(consumer, *self._auth()))
            case "GET", ["log", reader]:
                self._sealed(*self.server.comp.sealed_log(reader, *self._auth()))
            case _:
                raise NotFoundError(f"no such endpoint: {method} /{'/'.join(path)}")

    def _upload(self, slot: str) -> None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None or not length.isdigit():
            raise InvalidInputError(
                "uploads need a Content-Length (no chunked encoding)", code="length-required"
            )
        self._body = _BodyReader(self.rfile, int(length))
        result = self.server.comp.upload(
            slot,
            size=int(length),
            sha256_hex=self.headers.get(H_SHA256, ""),
            signature_hex=self.headers.get(H_SIGNATURE, ""),
            body=self._body,
        )
        self._json(HTTPStatus.CREATED, result)

    def _auth(self) -> tuple[str, str]:
        return self.headers.get(H_CHALLENGE, ""), self.headers.get(H_SIGNATURE, "")

    def _sealed(self, path: Path, sha: str) -> None:
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header(H_RESULT_SHA256, sha)
        self.end_headers()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                self.wfile.write(chunk)


def serve_in_thread(server: AnyEnclaveServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, name="sealroom-https", daemon=True)
    t.start()
    return t


def bind(host: str, port: int, comp: Computation) -> EnclaveServer:
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(
        "SEALROOM_ALLOW_NON_LOOPBACK"
    ):
        raise InvalidInputError(
            f"refusing to listen on {host}: the runtime binds to loopback; the host agent "
            "relays traffic to it (set SEALROOM_ALLOW_NON_LOOPBACK=1 inside a real CVM)"
        )
    try:
        return EnclaveServer((host, port), comp)
    except OSError as e:
        raise InvalidInputError(f"cannot listen on {host}:{port}: {e.strerror}") from e


_SUN_PATH_MAX = 107


def bind_unix(path: Path, comp: Computation) -> UnixEnclaveServer:
    if len(os.fsencode(path)) > _SUN_PATH_MAX - 16:
        raise InvalidInputError(
            f"socket path {path} is too long for a Unix socket "
            f"({len(os.fsencode(path))} bytes, at most {_SUN_PATH_MAX - 16})"
        )
    try:
        return UnixEnclaveServer(path, comp)
    except OSError as e:
        raise InvalidInputError(f"cannot listen on unix:{path}: {e.strerror or e}") from e


def bind_listen(spec: str, comp: Computation) -> AnyEnclaveServer:
    """``HOST:PORT`` (loopback TCP) or ``unix:/path/to.sock``."""
    if spec.startswith("unix:"):
        return bind_unix(Path(spec.removeprefix("unix:")), comp)
    host, _, port = spec.rpartition(":")
    try:
        number = int(port or 0)
    except ValueError as e:
        raise InvalidInputError(f"--listen {spec!r}: want HOST:PORT or unix:PATH") from e
    return bind(host or "127.0.0.1", number, comp)
