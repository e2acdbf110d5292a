"""The service enclave's TLS front (docs/adr/0032): TLS terminates here, with the key the
enclave generated and binds in its evidence; the plaintext goes to the sandboxed workload
through the sandbox's ingress bridge and nowhere else.

Per connection: the first request's head is read. ``GET /.well-known/sealroom/attestation
?nonce=HEX`` is answered by the enclave (fresh evidence binding the spec hash, the keys and
the nonce) and the connection closes, so a verifier checks the key of the very connection
that carried the evidence. ``GET /.well-known/sealroom/health`` answers public health facts.
Any other first request opens a stream to the workload, and from then on the connection's
bytes are spliced both ways unchanged (HTTP or not: the workload speaks for itself).
The enclave's paths are therefore answered only as a connection's first request; clients
that want evidence open a fresh connection (``sealroom service verify`` does).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import socketserver
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sealroom.errors import InvalidInputError, PayloadTooLargeError, SealroomError, to_problem
from sealroom.protocol.model import MAX_REQUEST_BYTES
from sealroom.protocol.service import WELL_KNOWN_ATTESTATION
from sealroom.runtime.server import bind_private_unix, tls_context
from sealroom.runtime.service import Service

HANDSHAKE_TIMEOUT = 30.0
IDLE_TIMEOUT = 300.0
MAX_HEAD = 64 << 10
BUF = 1 << 16
HEALTH_PATH = "/.well-known/sealroom/health"
#: POSTs under this prefix are the runtime's own (the model server's sealed inference,
#: docs/adr/0040); the connection stays open for more of them (keep-alive).
ENCLAVE_POST_PREFIX = "/.well-known/sealroom/"


class _Front:
    """What both listeners share: the TLS context and the per-connection handling."""

    service: Service
    ssl_context: ssl.SSLContext

    def handle_connection(self, raw: socket.socket) -> None:
        raw.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        try:
            head = _read_head(tls)
            if not head:
                return
            target = _target(head)
            if (
                target is not None
                and head.startswith(b"POST ")
                and target.startswith(ENCLAVE_POST_PREFIX)
            ):
                self._enclave_posts(tls, head)
                return
            if target is not None and (
                target.startswith(WELL_KNOWN_ATTESTATION + "?")
                or target in (WELL_KNOWN_ATTESTATION, HEALTH_PATH)
            ):
                self._answer(tls, head, target)
                return
            try:
                work = self.service.connect_workload()
            except SealroomError as e:
                _respond(tls, e.http_status, to_problem(e, e.http_status, type(e).__name__))
                return
            with work:
                _splice(tls, work, head)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def _answer(self, tls: ssl.SSLSocket, head: bytes, target: str) -> None:
        if not head.startswith(b"GET "):
            _respond(tls, 405, {"title": "only GET", "status": 405})
            return
        parts = urlsplit(target)
        if parts.path == HEALTH_PATH:
            _respond(tls, 200, self.service.health.to_json_obj())
            return
        nonce = parse_qs(parts.query).get("nonce", [""])[-1]
        try:
            try:
                raw = bytes.fromhex(nonce)
            except ValueError as e:
                raise InvalidInputError(f"nonce is not hex: {nonce[:140]!r}") from e
            _respond(tls, 200, self.service.attestation(raw).wire())
        except SealroomError as e:
            _respond(tls, e.http_status, to_problem(e, e.http_status, type(e).__name__))

    def _enclave_posts(self, tls: ssl.SSLSocket, buf: bytes) -> None:
        """POSTs to the runtime's own paths, one after another on this connection, each
        ``Content-Length`` framed (no chunked bodies), until the client closes."""
        while buf:
            end = buf.index(b"\r\n\r\n") + 4
            head, rest = buf[:end], buf[end:]
            target = _target(head) or ""
            if not head.startswith(b"POST ") or not target.startswith(ENCLAVE_POST_PREFIX):
                _respond(tls, 400, {"title": "enclave paths only on this connection"})
                return
            length = _content_length(head)
            if length is None or not 0 <= length <= MAX_REQUEST_BYTES:
                e: SealroomError = PayloadTooLargeError(
                    f"request body must have a Content-Length of at most {MAX_REQUEST_BYTES}"
                )
                _respond(tls, e.http_status, to_problem(e, e.http_status, type(e).__name__))
                return
            body = bytearray(rest)
            while len(body) < length:
                chunk = tls.recv(BUF)
                if not chunk:
                    return
                body += chunk
            extra = bytes(body[length:])
            try:
                out = self.service.handle_enclave_post(urlsplit(target).path, bytes(body[:length]))
            except SealroomError as err:
                _respond(tls, err.http_status, to_problem(err, err.http_status, type(err).__name__))
                return
            tls.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                + f"Content-Length: {len(out)}\r\nCache-Control: no-store\r\n\r\n".encode()
                + out
            )
            buf = extra
            while b"\r\n\r\n" not in buf:
                if len(buf) > MAX_HEAD:
                    return
                chunk = tls.recv(BUF)
                if not chunk:
                    return
                buf += chunk


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _read_head(tls: ssl.SSLSocket) -> bytes:
    """The bytes up to the end of the first request's head (and whatever came with it)."""
    tls.settimeout(IDLE_TIMEOUT)
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            raise OSError("request head too long")
        chunk = tls.recv(BUF)
        if not chunk:
            return bytes(buf)
        buf += chunk
    return bytes(buf)


def _target(head: bytes) -> str | None:
    line = head.split(b"\r\n", 1)[0].split(b" ")
    if len(line) != 3:
        return None
    return line[1].decode("latin-1")


def _respond(tls: ssl.SSLSocket, status: int, obj: dict[str, Any]) -> None:
    body = json.dumps(obj).encode()
    ctype = "application/problem+json" if status >= 400 else "application/json"
    tls.sendall(
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def _splice(tls: ssl.SSLSocket, work: socket.socket, first: bytes) -> None:
    """Both directions in this one thread (one TLS object is never used from two
    threads): non-blocking, bounded buffers, closed when either side is done."""
    tls.setblocking(False)
    work.setblocking(False)
    to_work = bytearray(first)
    to_tls = bytearray()
    tls_eof = work_eof = False
    while True:
        if work_eof and not to_tls:
            return
        if tls_eof and not to_work:
            with contextlib.suppress(OSError):
                work.shutdown(socket.SHUT_WR)
        rl: list[Any] = []
        wl: list[Any] = []
        if not tls_eof and len(to_work) < BUF:
            rl.append(tls)
        if not work_eof and len(to_tls) < BUF:
            rl.append(work)
        if to_work:
            wl.append(work)
        if to_tls:
            wl.append(tls)
        r: list[Any]
        w: list[Any]
        if tls in rl and tls.pending():
            r, w = [tls], []
        else:
            r, w, _ = select.select(rl, wl, [], IDLE_TIMEOUT)
            if not r and not w:
                return  # idle
        if tls in r:
            try:
                data = tls.recv(BUF)
                if data:
                    to_work += data
                else:
                    tls_eof = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLZeroReturnError:
                tls_eof = True
        if work in r:
            try:
                got = work.recv(BUF)
                if got:
                    to_tls += got
                else:
                    work_eof = True
            except BlockingIOError:
                pass
        if work in w and to_work:
            try:
                n = work.send(to_work)
                del to_work[:n]
            except BlockingIOError:
                pass
        if tls in w and to_tls:
            try:
                n = tls.send(to_tls)
                del to_tls[:n]
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass


class ServiceServer(_Front, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: Service) -> None:
        self.service = service
        self.ssl_context = tls_context(service.keys)
        super().__init__(address, socketserver.BaseRequestHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.handle_connection(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """No tracebacks on the host's terminal: they could carry enclave data."""

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"https://{host!s}:{port}"


class UnixServiceServer(_Front, socketserver.ThreadingUnixStreamServer):
    """The same front on a Unix socket (the host agent relays a TCP port to it)."""

    daemon_threads = True

    def __init__(self, path: Path, service: Service) -> None:
        self.service = service
        self.ssl_context = tls_context(service.keys)
        self.socket_path = path
        super().__init__(os.fspath(path), socketserver.BaseRequestHandler)

    def server_bind(self) -> None:
        bind_private_unix(self.socket, self.socket_path)
        self.server_address = os.fspath(self.socket_path)

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.handle_connection(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """No tracebacks on the host's terminal: they could carry enclave data."""

    @property
    def url(self) -> str:
        return f"unix:{self.socket_path}"


AnyServiceServer = ServiceServer | UnixServiceServer


def bind_service(spec: str, service: Service) -> AnyServiceServer:
    """``HOST:PORT`` (loopback TCP, unless SEALROOM_ALLOW_NON_LOOPBACK) or ``unix:PATH``."""
    try:
        if spec.startswith("unix:"):
            return UnixServiceServer(Path(spec.removeprefix("unix:")), service)
        host, _, port = spec.rpartition(":")
        host = host or "127.0.0.1"
        if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(
            "SEALROOM_ALLOW_NON_LOOPBACK"
        ):
            raise InvalidInputError(
                f"refusing to listen on {host}: the runtime binds to loopback; the host "
                "agent relays traffic to it"
            )
        return ServiceServer((host, int(port or 0)), service)
    except ValueError as e:
        raise InvalidInputError(f"--listen {spec!r}: want HOST:PORT or unix:PATH") from e
    except OSError as e:
        raise InvalidInputError(f"cannot listen on {spec}: {e.strerror or e}") from e
