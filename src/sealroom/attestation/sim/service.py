"""The HOST side of the sim TEE: the sim authority answering report requests on a Unix socket.

The host launches a runtime and starts one :class:`SimTeeService` for it, fixing at launch
the MEASUREMENT (``measure_tree`` over the runtime code it launched) and HOST_DATA (the
manifest hash). The guest (``sealroom.tee.sim.SimProvider``) can choose only REPORT_DATA:
a request naming anything else is refused, so the guest cannot lie about what was
launched. This mirrors SNP, where MEASUREMENT and HOST_DATA come from the launch and only
REPORT_DATA comes from the guest's request.

Wire protocol, one request per connection, JSON lines (UTF-8, ``\\n``-terminated)::

    -> {"report_data": "<128 hex digits>"}
    <- {"report": "<base64 report>", "attachments": {"vcek": "<base64 DER>", "ask": "..."}}
    <- {"error": "<message>"}                      (any refusal)

The socket file is mode 0600 from the moment its name exists (bound under a temporary name,
chmod, then renamed into place). Requests are bounded in size; each connection is served on
its own thread with a socket timeout and an overall deadline, and the number of connections
served at once is capped (the rest wait in the listen backlog), so a client that connects
and sends nothing cannot hold the service.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import socket
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sealroom.attestation.sim.authority import SimAuthority
from sealroom.errors import InvalidInputError, SealroomError

log = logging.getLogger(__name__)

#: Largest request line accepted (a 64-byte REPORT_DATA in hex needs ~150 bytes).
MAX_REQUEST = 1024
#: Seconds a client may take to send its request and receive the answer.
IO_TIMEOUT = 5.0
#: Connections served at once; more wait in the listen backlog.
MAX_CONNECTIONS = 16
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_SUN_PATH_MAX = 107
_ACCEPT_POLL = 0.2


class _RequestError(Exception):
    """A refusal sent back to the client as {"error": ...}."""


def parse_request(line: bytes) -> bytes:
    """The REPORT_DATA a request line asks for. Strict: one key, 128 hex digits."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _RequestError(f"request is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise _RequestError(f"request must be a JSON object, got {type(obj).__name__}")
    extra = sorted(set(obj) - {"report_data"})
    if extra:
        # MEASUREMENT and HOST_DATA are fixed by the host at launch; the guest picks
        # REPORT_DATA only.
        raise _RequestError(f"request has unknown keys {extra}; only 'report_data' is accepted")
    value = obj.get("report_data")
    if not isinstance(value, str):
        raise _RequestError("report_data must be a hex string")
    if len(value) != 128:
        raise _RequestError(f"report_data is {len(value)} hex digits, expected 128 (64 bytes)")
    try:
        return bytes.fromhex(value)
    except ValueError as e:
        raise _RequestError(f"report_data is not hex: {e}") from e


class SimTeeService:
    """Serves sim reports with a fixed MEASUREMENT and HOST_DATA on a Unix socket."""

    def __init__(
        self,
        authority: SimAuthority,
        *,
        measurement: bytes,
        host_data: bytes,
        socket_path: Path,
        io_timeout: float = IO_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if len(measurement) != 48:
            raise InvalidInputError(f"measurement is {len(measurement)} bytes, expected 48")
        if len(host_data) != 32:
            raise InvalidInputError(f"host_data is {len(host_data)} bytes, expected 32")
        if len(os.fsencode(socket_path)) > _SUN_PATH_MAX - 24:
            # leaves room for the temporary name used while binding
            raise InvalidInputError(
                f"socket path {socket_path} is too long for a Unix socket "
                f"({len(os.fsencode(socket_path))} bytes, at most {_SUN_PATH_MAX - 24})"
            )
        if io_timeout <= 0 or max_connections < 1:
            raise ValueError("io_timeout must be > 0 and max_connections >= 1")
        self.authority = authority
        self.measurement = bytes(measurement)
        self.host_data = bytes(host_data)
        self.socket_path = Path(socket_path)
        self.io_timeout = io_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._handlers: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._inode: tuple[int, int] | None = None
        self.requests_served = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("SimTeeService already started")
        path = self.socket_path
        self._remove_stale(path)
        tmp = path.parent / f".sim-{secrets.token_hex(6)}.tmp"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(os.fspath(tmp))
            try:
                os.chmod(tmp, 0o600)
                os.rename(tmp, path)
            except OSError:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            st = path.lstat()
            self._inode = (st.st_dev, st.st_ino)
            server.listen(MAX_CONNECTIONS)
            server.settimeout(_ACCEPT_POLL)
        except OSError as e:
            server.close()
            raise InvalidInputError(f"cannot serve the sim TEE on {path}: {e}") from e
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="sim-tee-service", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            handlers = list(self._handlers)
        for h in handlers:
            h.join(self.io_timeout * 2)
        self._unlink_own_socket()

    def __enter__(self) -> SimTeeService:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def _remove_stale(path: Path) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise InvalidInputError(f"{path} exists and is not a socket; refusing to replace it")
        # A socket nobody answers on is left over from an earlier run.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1)
            probe.connect(os.fspath(path))
        except OSError:
            path.unlink()
            return
        finally:
            probe.close()
        raise InvalidInputError(f"another service is already listening on {path}")

    def _unlink_own_socket(self) -> None:
        if self._inode is None:
            return
        try:
            st = self.socket_path.lstat()
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            self.socket_path.unlink()
        self._inode = None

    # ------------------------------------------------------------------ serving

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        while not self._stopping.is_set():
            # Take a slot before accepting: when every slot is busy, new connections wait
            # in the listen backlog (each slot is held for at most io_timeout).
            if not self._slots.acquire(timeout=_ACCEPT_POLL):
                continue
            try:
                conn, _ = server.accept()
            except TimeoutError:
                self._slots.release()
                continue
            except OSError:
                self._slots.release()
                if self._stopping.is_set():
                    return
                time.sleep(_ACCEPT_POLL)
                continue
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            with self._lock:
                self._handlers.add(t)
            t.start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(self.io_timeout)
                deadline = time.monotonic() + self.io_timeout
                try:
                    line = _read_line(conn, MAX_REQUEST, deadline)
                    answer = self._answer(parse_request(line))
                except _RequestError as e:
                    answer = {"error": str(e)}
                except SealroomError as e:
                    answer = {"error": e.message}
                except OSError:
                    return  # client went away or timed out: nothing to answer
                except Exception:  # keep serving; the client learns only that it failed
                    log.exception("sim TEE service failed to answer a request")
                    answer = {"error": "internal error in the sim TEE service"}
                with contextlib.suppress(OSError):
                    conn.sendall(_encode(answer))
                    _drain(conn, deadline)
        finally:
            self._slots.release()
            with self._lock:
                self._handlers.discard(threading.current_thread())

    def _answer(self, report_data: bytes) -> dict[str, Any]:
        report = self.authority.report(
            measurement=self.measurement, report_data=report_data, host_data=self.host_data
        )
        item = self.authority.evidence(report, collected_at=datetime.now(UTC))
        with self._lock:
            self.requests_served += 1
        return {
            "report": base64.b64encode(item.data).decode(),
            "attachments": {
                k: base64.b64encode(v).decode() for k, v in sorted(item.attachments.items())
            },
        }


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _drain(conn: socket.socket, deadline: float) -> None:
    """Finish the connection so the answer arrives: closing with unread input would make
    the kernel reset the connection and drop the answer (an oversized request, say)."""
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
    for _ in range(64):  # at most 64 x 64 KiB of a flooding client's data
        if not conn.recv(65536):
            return


def _read_line(conn: socket.socket, limit: int, deadline: float) -> bytes:
    """One ``\\n``-terminated line (or everything up to EOF), at most ``limit`` bytes."""
    buf = bytearray()
    while True:
        if time.monotonic() > deadline:
            raise _RequestError("request not received in time")
        try:
            chunk = conn.recv(limit + 1 - len(buf))
        except TimeoutError as e:
            raise _RequestError("request not received in time") from e
        if not chunk:
            break
        buf += chunk
        if b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            if rest.strip():
                raise _RequestError("one request per connection")
            return line
        if len(buf) > limit:
            raise _RequestError(f"request is larger than {limit} bytes")
    if not buf:
        raise _RequestError("empty request")
    return bytes(buf)
