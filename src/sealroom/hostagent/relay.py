"""A byte-for-byte relay: a TCP port on 127.0.0.1 -> an enclave runtime's Unix socket.

The host agent reports ``https://127.0.0.1:PORT`` as the enclave endpoint; parties speak
TLS through it to the enclave's own key, so the host sees ciphertext only. The relay
never parses what it forwards.

Two threads per connection, each moving at most one ``CHUNK`` at a time (bounded memory
per connection), a cap on concurrent connections (further ones are closed at once), and
half-close propagation: EOF on one side becomes ``shutdown(SHUT_WR)`` on the other; both
sockets are closed when both directions ended.

Fail closed (docs/adr/0033): ``close_gate(reason)`` refuses new connections and cuts the
open ones, for an enclave whose continuous attestation failed or went missing;
``open_gate()`` lets traffic through again once a heartbeat verified.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from pathlib import Path

from sealroom.errors import InvalidInputError

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_CONNECTIONS = 256
CONNECT_TIMEOUT = 10.0
#: A direction idle this long ends the connection (the enclave's long polls wait <= 30 s).
IDLE_TIMEOUT = 300.0
_ACCEPT_POLL = 0.25


class _Pair:
    """One relayed connection: two sockets, closed when both directions are done."""

    def __init__(self, a: socket.socket, b: socket.socket, done: threading.Semaphore) -> None:
        self.a, self.b = a, b
        self._left = 2
        self._lock = threading.Lock()
        self._done = done

    def cut(self) -> None:
        """End both directions now (the pumps see the shutdown and finish)."""
        for s in (self.a, self.b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            # one side reset: tear both down so the other direction ends too
            for s in (self.a, self.b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        else:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        finally:
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self.a.close()
                self.b.close()
                self._done.release()


class TcpToUnixRelay:
    """Listen on 127.0.0.1:``port`` (0 = a free port) and relay each connection to the
    Unix socket at ``target``."""

    def __init__(
        self,
        target: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        advertise: str | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.target = Path(target)
        # the address parties are told (another host's view of this one); default: the
        # address listened on
        self.advertise = advertise
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gate_lock = threading.Lock()
        self._closed_reason: str | None = None
        self._pairs: set[_Pair] = set()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.settimeout(_ACCEPT_POLL)
        except OSError as e:
            sock.close()
            raise InvalidInputError(f"relay cannot listen on {host}:{port}: {e.strerror}") from e
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self.connections = 0

    @property
    def gate_closed(self) -> str | None:
        """Why traffic is refused, or None while it flows."""
        return self._closed_reason

    def close_gate(self, reason: str) -> None:
        """Refuse new connections and cut every open one (fail closed)."""
        with self._gate_lock:
            self._closed_reason = reason or "closed"
            pairs = list(self._pairs)
        for pair in pairs:
            pair.cut()

    def open_gate(self) -> None:
        with self._gate_lock:
            self._closed_reason = None

    @property
    def endpoint(self) -> str:
        host = self.advertise or self.host
        return f"https://[{host}]:{self.port}" if ":" in host else f"https://{host}:{self.port}"

    def start(self) -> TcpToUnixRelay:
        self._thread = threading.Thread(target=self._serve, name=f"relay-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join()
        self._sock.close()

    def __enter__(self) -> TcpToUnixRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if self._closed_reason is not None:
                client.close()  # the enclave is not trusted now: no traffic to it
                continue
            if not self._slots.acquire(blocking=False):
                client.close()  # over the cap: refuse rather than queue without bound
                continue
            self.connections += 1
            threading.Thread(target=self._open, args=(client,), daemon=True).start()

    def _open(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.settimeout(CONNECT_TIMEOUT)
            upstream.connect(str(self.target))
            upstream.settimeout(IDLE_TIMEOUT)
            client.settimeout(IDLE_TIMEOUT)
            # The enclave's writes arrive here in pieces (headers, body): with Nagle on
            # the TCP side each small response would wait for the client's delayed ACK.
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            log.debug("relay: enclave socket %s unreachable: %s", self.target, e)
            upstream.close()
            client.close()
            self._slots.release()
            return
        pair = _Pair(client, upstream, self._slots)
        with self._gate_lock:
            self._pairs.add(pair)
            closed = self._closed_reason is not None
        if closed:  # the gate closed while this one was connecting
            pair.cut()
        threading.Thread(target=pair.pump, args=(upstream, client), daemon=True).start()
        try:
            pair.pump(client, upstream)
        finally:
            with self._gate_lock:
                self._pairs.discard(pair)
