"""One long-running service inside the enclave (docs/adr/0032).

The I/O shell around a sandboxed workload: the spec's files are laid out in enclave
storage, the workload runs in the computation sandbox (its own network namespace; the
launcher's bridge is its only way in or out), is restarted per the spec's restart policy,
and what it prints stays in enclave memory (bounded), never on the host. The enclave's
keys are generated here; ``attestation(nonce)`` returns evidence whose REPORT_DATA binds
the spec hash, the keys (the TLS key among them) and the verifier's nonce.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from sealroom.attestation.binding import ReportDataInputs, sealroom_report_data
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.crypto.signing import signed_json
from sealroom.errors import InvalidInputError, NotFoundError, SealroomError, UnavailableError
from sealroom.protocol.enclave_api import PublicKeysWire
from sealroom.protocol.service import (
    BREACH_DOMAIN,
    EGRESS_PROXY_PORT,
    EGRESS_PROXY_SOCKET,
    INGRESS_SOCKET,
    ServiceAttestationAnswer,
    ServiceSpec,
)
from sealroom.runtime.enclave_keys import EnclaveKeys
from sealroom.runtime.sandbox import Limits, RunOutcome, ServiceNet, run_algorithm
from sealroom.tee.base import EvidenceProvider

#: A service runs until stopped; the sandbox wants a finite wall limit.
SERVICE_WALL_SECONDS = 10 * 365 * 86400.0
MAX_LOG_BYTES = 1 << 20
CONNECT_TIMEOUT = 10.0
MAX_PROXY_HEAD = 8192
CONNECT_OK = b"HTTP/1.1 200 Connection established\r\n\r\n"


@dataclass(frozen=True)
class Health:
    """Public facts about the workload: the host may see these (no output, no data)."""

    state: str  # starting | running | restarting | stopped | failed
    restarts: int
    last_exit: str
    since: str

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "since": self.since,
        }


class Service:
    def __init__(
        self,
        spec: ServiceSpec,
        workdir: Path,
        provider: EvidenceProvider,
        keys: EnclaveKeys | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_health: Callable[[Health], None] | None = None,
        on_breach: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if spec.kind == "oci":
            raise UnavailableError(
                "kind oci runs through the host's container engine, not this runtime",
                code="oci-unavailable",
            )
        self.spec = spec
        self.spec_hash = spec.spec_hash
        self.workdir = workdir
        self.provider = provider
        self.keys = keys or EnclaveKeys(f"sealroom service {spec.name}")
        self.clock = clock
        self.on_health = on_health
        self.on_breach = on_breach
        self.breached: dict[str, Any] | None = None  # the signed breach event, once
        for sub in ("algorithm", "inputs", "state", "bridge"):
            (workdir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lay_out_files()
        self._cancel = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._log: deque[tuple[str, bytes]] = deque()
        self._log_bytes = 0
        self._health = Health("starting", 0, "", self.clock().isoformat())
        self._thread: threading.Thread | None = None

    # ---- files ----------------------------------------------------------------------
    def _lay_out_files(self) -> None:
        base = self.workdir / "algorithm"
        for name, f in self.spec.files.items():
            rel = PurePosixPath(name)
            target = base.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(
                target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700 if f.executable else 0o600
            )
            with os.fdopen(fd, "wb") as out:
                out.write(f.content)

    # ---- evidence -------------------------------------------------------------------
    @property
    def report_data_inputs(self) -> ReportDataInputs:
        return ReportDataInputs(self.spec_hash, self.keys.public.digest)

    def evidence(self, nonce: bytes) -> EvidenceBundle:
        item = self.provider.collect(sealroom_report_data(self.report_data_inputs, nonce))
        if item.collected_at is None:
            item = replace(item, collected_at=self.clock())
        return EvidenceBundle.single(item)

    def check_open(self) -> None:
        """Refuse everything once the boundary was breached (the runtime is going down)."""
        if self.breached is not None:
            raise UnavailableError(
                "this enclave stopped its workload after a breach of its permission "
                "boundary and serves nothing more",
                code="breached",
            )

    def attestation(self, nonce: bytes) -> ServiceAttestationAnswer:
        self.check_open()
        if not 8 <= len(nonce) <= 64:
            raise InvalidInputError(f"nonce must be 8 to 64 bytes, got {len(nonce)}")
        return ServiceAttestationAnswer(
            evidence=json.loads(self.evidence(nonce).to_json()),
            enclave_keys=PublicKeysWire.of(self.keys.public),
            keys_digest=self.keys.public.digest.hex(),
            spec_hash=self.spec_hash.hex(),
            spec=self.measured_spec(),
            nonce=nonce.hex(),
        )

    def measured_spec(self) -> dict[str, Any]:
        """The public form of what ``spec_hash`` covers (shown in the attestation)."""
        return self.spec.measured()

    def handle_enclave_post(self, path: str, body: bytes) -> bytes:
        """A POST to one of the enclave's own paths (``/.well-known/sealroom/...``)
        answered by the runtime itself; a plain service has none (the model server's
        inference path: docs/adr/0040)."""
        raise NotFoundError(f"no enclave path {path}")

    # ---- the workload ---------------------------------------------------------------
    @property
    def health(self) -> Health:
        with self._lock:
            return self._health

    def _set_health(self, state: str, last_exit: str | None = None, restarts: int = -1) -> None:
        with self._lock:
            h = self._health
            self._health = Health(
                state,
                h.restarts if restarts < 0 else restarts,
                h.last_exit if last_exit is None else last_exit,
                self.clock().isoformat(),
            )
            h = self._health
        if self.on_health is not None:
            self.on_health(h)

    def start(self) -> None:
        self._start_egress()
        self._thread = threading.Thread(target=self._supervise, name="sealroom-svc", daemon=True)
        self._thread.start()

    def _start_egress(self) -> None:
        """One Unix socket per allow-list entry in the bridge directory; the sandbox's
        launcher joins 127.0.0.1:<its port> inside to it. Each connection is dialled to
        that entry's HOST:PORT and nowhere else (bytes pass unchanged: the workload's own
        TLS, if any, stays end to end)."""
        self._egress_listeners: list[socket.socket] = []
        for i, entry in enumerate(self.spec.egress):
            host, _, port = entry.rpartition(":")
            path = self.workdir / "bridge" / f"egress-{i}.sock"
            lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            lst.bind(os.fspath(path))
            # The bridge directory is 0700 and the sandbox's own: only its uid reaches this.
            os.chmod(path, 0o666)  # noqa: S103 - inside a 0700 directory, see above
            lst.listen(64)
            self._egress_listeners.append(lst)
            threading.Thread(
                target=self._egress_loop,
                args=(lst, host.strip("[]"), int(port)),
                name=f"sealroom-egress-{i}",
                daemon=True,
            ).start()
        if self.spec.egress:
            self._start_proxy()

    def _start_proxy(self) -> None:
        """The in-enclave egress proxy (docs/adr/0041): HTTP CONNECT HOST:PORT from the
        workload; a granted destination is dialled, any other is a breach."""
        path = self.workdir / "bridge" / EGRESS_PROXY_SOCKET
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        lst.bind(os.fspath(path))
        os.chmod(path, 0o666)  # noqa: S103 - inside the sandbox's 0700 bridge directory
        lst.listen(64)
        self._egress_listeners.append(lst)

        def loop() -> None:
            while not self._cancel.is_set():
                try:
                    inner, _ = lst.accept()
                except OSError:
                    return
                threading.Thread(target=self._proxy_one, args=(inner,), daemon=True).start()

        threading.Thread(target=loop, name="sealroom-egress-proxy", daemon=True).start()

    def _proxy_one(self, inner: socket.socket) -> None:
        inner.settimeout(CONNECT_TIMEOUT)
        try:
            head = bytearray()
            while b"\r\n\r\n" not in head:
                chunk = inner.recv(4096)
                if not chunk or len(head) > MAX_PROXY_HEAD:
                    inner.close()
                    return
                head += chunk
        except OSError:
            inner.close()
            return
        method, target = _proxy_target(bytes(head))
        if target not in self.spec.egress:
            with contextlib.suppress(OSError):
                inner.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            inner.close()
            self.breach(
                "egress-denied",
                "the workload asked the egress proxy for a destination its spec does not grant",
            )
            return
        if method != b"CONNECT":
            with contextlib.suppress(OSError):
                inner.sendall(b"HTTP/1.1 405 Use CONNECT\r\nContent-Length: 0\r\n\r\n")
            inner.close()
            return
        host, _, port = target.rpartition(":")
        _dial_and_pipe(
            inner, host.strip("[]"), int(port), b"HTTP/1.1 200 Connection established\r\n\r\n"
        )

    def _on_interfaces(self, count: int) -> None:
        self.breach(
            "network-interface",
            f"{count} network interface(s) besides loopback appeared in the workload's sandbox",
        )

    def breach(self, code: str, message: str) -> None:
        """The workload tried to leave what it was granted: sign an event saying why with
        the enclave's key, stop the workload and every egress path, refuse every request
        from now on; ``on_breach`` (the runtime's main) then drops the sessions and keys
        by shutting the front down and exiting. Once; later attempts add nothing."""
        with self._lock:
            if self.breached is not None:
                return
            event = {
                "type": "sealroom/breach/v1",
                "code": code,
                "message": message,
                "spec_hash": self.spec_hash.hex(),
                "keys_digest": self.keys.public.digest.hex(),
                "time": self.clock().isoformat(),
            }
            self.breached = signed_json(event, self.keys.receipt_key, BREACH_DOMAIN)
        self._cancel.set()
        for lst in getattr(self, "_egress_listeners", []):
            lst.close()
        self._set_health("stopped", last_exit=f"breach: {code}")
        if self.on_breach is not None:
            self.on_breach(self.breached)

    def _egress_loop(self, lst: socket.socket, host: str, port: int) -> None:
        while not self._cancel.is_set():
            try:
                inner, _ = lst.accept()
            except OSError:
                return
            threading.Thread(target=_dial_and_pipe, args=(inner, host, port), daemon=True).start()

    def _net(self) -> ServiceNet:
        ports = self.spec.egress_ports()
        return ServiceNet(
            bridge_dir=self.workdir / "bridge",
            port=self.spec.port,
            egress_ports=tuple(ports.values()),
            egress_names=tuple(ports),
            proxy_port=EGRESS_PROXY_PORT if self.spec.egress else None,
            on_interfaces=self._on_interfaces,
            env=tuple(sorted(self.spec.env.items())),
        )

    def _limits(self) -> Limits:
        r = self.spec.resources
        return Limits(
            vcpus=r.vcpus,
            memory_bytes=r.memory_mb * 2**20,
            wall_seconds=SERVICE_WALL_SECONDS,
            max_result_bytes=r.state_mb * 2**20,
            max_processes=r.max_processes,
            tmp_bytes=r.tmp_mb * 2**20,
            max_output_bytes=MAX_LOG_BYTES,
        )

    def _run_once(self) -> RunOutcome:
        return run_algorithm(
            self.spec.kind,  # type: ignore[arg-type]  # oci refused in __init__
            self.workdir / "algorithm",
            entrypoint=self.spec.command[0],
            args=self.spec.command[1:],
            inputs=self.workdir / "inputs",
            results=self.workdir / "state",
            limits=self._limits(),
            on_output=self._on_output,
            cancel=self._cancel,
            service=self._net(),
        )

    def _supervise(self) -> None:
        policy = self.spec.restart
        restarts = 0
        while not self._cancel.is_set():
            started = time.monotonic()
            self._set_health("running", restarts=restarts)
            try:
                outcome = self._run_once()
                failed = not outcome.ok
                reason = outcome.reason
            except SealroomError as e:
                failed, reason = True, e.code
            except Exception as e:  # the supervisor must survive to report it
                failed, reason = True, f"internal error: {type(e).__name__}"
            if self._cancel.is_set():
                break
            if time.monotonic() - started >= policy.backoff_reset_seconds:
                restarts = 0
            again = policy.policy == "always" or (policy.policy == "on-failure" and failed)
            if not again or restarts >= policy.max_restarts:
                self._set_health("failed" if failed else "stopped", last_exit=reason)
                break
            restarts += 1
            self._set_health("restarting", last_exit=reason, restarts=restarts)
            if self._cancel.wait(policy.backoff_ms / 1000 * min(restarts, 10)):
                break
        else:
            pass
        if self._cancel.is_set():
            self._set_health("stopped", last_exit="stopped by the enclave")
        self._stopped.set()

    def _on_output(self, stream: str, chunk: bytes) -> None:
        """The workload's output: enclave memory only, the newest MAX_LOG_BYTES kept."""
        with self._lock:
            self._log.append((stream, chunk))
            self._log_bytes += len(chunk)
            while self._log_bytes > MAX_LOG_BYTES and self._log:
                _, old = self._log.popleft()
                self._log_bytes -= len(old)

    def log_bytes(self) -> bytes:
        with self._lock:
            return b"".join(c for _, c in self._log)

    def connect_workload(self, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
        """A stream to the workload's port: the sandbox's bridge dials it inside the
        sandbox's network namespace and hands the connected socket over (SCM_RIGHTS)."""
        self.check_open()
        path = self.workdir / "bridge" / INGRESS_SOCKET
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(os.fspath(path))
            msg, fds, _, _ = socket.recv_fds(s, 1, 1)
        except OSError as e:
            raise UnavailableError(
                f"service workload is not reachable ({self.health.state})", code="workload-down"
            ) from e
        finally:
            s.close()
        if msg != b"1" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise UnavailableError(
                f"service workload is not listening ({self.health.state})", code="workload-down"
            )
        work = socket.socket(fileno=fds[0])
        work.settimeout(timeout)
        return work

    def wait_ready(self, timeout: float) -> bool:
        """Until the workload accepts a connection through the bridge (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopped.is_set():
            try:
                self.connect_workload(1.0).close()
                return True
            except UnavailableError:
                time.sleep(0.1)
        return False

    def stop(self, timeout: float = 30.0) -> None:
        self._cancel.set()
        for lst in getattr(self, "_egress_listeners", []):
            lst.close()
        if self._thread is not None:
            self._thread.join(timeout)


def _proxy_target(head: bytes) -> tuple[bytes, str]:
    """(method, HOST:PORT) of a proxy request: CONNECT's authority, or an absolute URI's
    host and port (80 for http); "" when there is none."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3:
        return b"", ""
    method, target = parts[0], parts[1].decode("latin-1")
    if method == b"CONNECT":
        return method, target
    url = urlsplit(target)
    if url.scheme not in ("http", "https") or not url.hostname:
        return method, ""
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return method, ""
    return method, f"{url.hostname}:{port}"


def _dial_and_pipe(inner: socket.socket, host: str, port: int, greeting: bytes = b"") -> None:
    try:
        outer = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError:
        inner.close()
        return
    if greeting:
        try:
            inner.sendall(greeting)
        except OSError:
            inner.close()
            outer.close()
            return
    outer.settimeout(None)
    inner.settimeout(None)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=pump, args=(outer, inner), daemon=True)
    t.start()
    pump(inner, outer)
    t.join()
    inner.close()
    outer.close()
