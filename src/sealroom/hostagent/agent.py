"""The host agent: a pull-based reconcile loop against the control plane.

Once: register with the one-time join token (the credential goes to DATA_DIR/agent.json,
0600, and is reused on every restart), then re-adopt the enclaves an earlier agent process
launched (DATA_DIR/state.json) or report them lost.

Every heartbeat interval:

1. poll each enclave (its runtime's stdout lines, liveness, TTL);
2. upload the outbox of finished enclaves (receipt, result.<consumer>) as blobs;
3. forward new enclave events (with their seq: the control plane drops duplicates);
4. heartbeat: resources (this machine minus the reserve; used = live enclaves' limits),
   TEE kinds, each enclave's endpoint, stats and the lifecycle transitions it made since
   the last accepted heartbeat, in order (``sealroom.protocol.agent``). An outcome
   (completed/failed) is reported only after its blobs are stored; then the enclave is
   stopped and ``destroyed`` follows;
5. act on ``desired``: launch "run" computations not launched here before (the id is
   persisted before the process starts: a crash never leads to a second launch), stop
   "stop" ones.

Any control-plane failure backs off exponentially (capped, with jitter) and the loop goes
on; nothing the control plane says or fails to say crashes the agent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealroom.errors import (
    AccessDeniedError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SealroomError,
    UnavailableError,
)
from sealroom.hostagent.backends.process import (
    ORPHAN_TIMEOUT,
    ProcessBackend,
    ProcessEnclave,
    RelayAddress,
    Timeouts,
)
from sealroom.hostagent.cpclient import ControlPlaneClient
from sealroom.hostagent.resources import Reserve, cpu_count, machine_resources
from sealroom.hostagent.state import AgentStore, Credential, EnclaveRecord
from sealroom.protocol.agent import (
    AgentEvent,
    Desired,
    EnclaveReport,
    Heartbeat,
    HeartbeatReply,
    Resources,
)
from sealroom.protocol.controlplane import FORWARDABLE_EVENTS
from sealroom.protocol.lifecycle import OUTCOMES, State

log = logging.getLogger("sealroom.hostagent")

EVENT_BATCH = 500
MISSING_BEFORE_STOP = 3  # heartbeats a live enclave may be absent from `desired`
ALIVE_INTERVAL = 1.0  # seconds between touches of the liveness file (orphan watchdog)
_jitter = secrets.SystemRandom()


@dataclass(frozen=True)
class AgentConfig:
    control_plane: str
    data_dir: Path
    join_token: str = ""
    name: str = field(default_factory=socket.gethostname)
    reserve: Reserve = field(default_factory=Reserve)
    heartbeat: float = 5.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    sim_authority: Path | None = None  # default: $SEALROOM_HOME/sim-authority
    orphan_timeout: float = ORPHAN_TIMEOUT
    relay_address: RelayAddress = field(default_factory=RelayAddress)
    # the control plane's certificate (or CA) to trust for an https URL (None: the
    # system's trust store, or $SEALROOM_CA_CERT)
    ca_cert: Path | None = None


class Agent:
    def __init__(self, config: AgentConfig, backend: ProcessBackend | None = None) -> None:
        self.config = config
        self.store = AgentStore(config.data_dir)
        if backend is None:
            cpus = _cpu_pool(config.reserve.cpus)
            backend = ProcessBackend(
                config.data_dir,
                timeouts=config.timeouts,
                cpus=cpus,
                authority_dir=config.sim_authority,
                orphan_timeout=config.orphan_timeout,
                relay_address=config.relay_address,
            )
        self.backend = backend
        self.enclaves: dict[str, ProcessEnclave] = {}
        self.launched: set[str] = set()
        self.client = ControlPlaneClient(config.control_plane, ca_cert=config.ca_cert)
        self.host_id = ""
        self.interval = config.heartbeat
        self.failures = 0
        self.stop_event = threading.Event()
        self._missing: dict[str, int] = {}
        self._uploads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    # ---- start ----------------------------------------------------------------------------
    def register(self) -> None:
        """Reuse the saved credential, or register once with the join token."""
        cred = self.store.load_credential()
        if cred is None:
            if not self.config.join_token:
                raise InvalidInputError(
                    f"no credential in {self.store.credential_path} and no join token "
                    f"(--join-token-file FILE or ${JOIN_TOKEN_ENV})",
                    code="join-token-required",
                )
            reg = self.client.register(
                self.config.join_token,
                self.config.name,
                list(self.backend.tee_kinds),
                self.resources(),
            )
            cred = Credential(self.config.control_plane, reg.host_id, reg.credential)
            self.store.save_credential(cred)
            log.info("registered with %s as host %s", self.config.control_plane, reg.host_id)
        else:
            log.info("reusing the credential of host %s", cred.host_id)
        self.host_id = cred.host_id
        self.client.credential = cred.credential

    def register_with_retry(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.register()
                self.failures = 0
                return
            except UnavailableError as e:
                delay = self.backoff()
                log.warning("registration failed (%s); retrying in %.1f s", e.message, delay)
                self.stop_event.wait(delay)

    def adopt_all(self) -> None:
        self.backend.touch_alive()
        records, launched = self.store.load()
        self.launched = launched
        for cid, rec in records.items():
            try:
                enc = self.backend.adopt(rec)
            except Exception as e:  # never let one bad record stop the agent
                log.error("cannot adopt enclave of %s: %s", cid, e)
                enc = ProcessEnclave(rec, self.backend.timeouts)
                enc.set_state(State.FAILED, f"enclave lost: cannot re-adopt: {e}")
            self.enclaves[cid] = enc
            log.info("adopted enclave of %s: %s %s", cid, enc.state.value, enc.record.reason)
        self.persist()

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        # Liveness for the enclaves' orphan watchdogs on its own thread: a slow or absent
        # control plane (backoff up to backoff_max, blocking calls) never makes a live
        # agent look dead, so the orphan window can be short.
        threading.Thread(target=self._keep_alive, name="agent-alive", daemon=True).start()
        self.register_with_retry()
        self.adopt_all()
        while not self.stop_event.is_set():
            delay = self.step()
            self.stop_event.wait(delay)
        self.shutdown()

    def _keep_alive(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(OSError):
                self.backend.touch_alive()
            self.stop_event.wait(ALIVE_INTERVAL)

    def shutdown(self) -> None:
        """Leave the enclaves running (a restarted agent re-adopts them); stop relays."""
        for enc in self.enclaves.values():
            if enc.relay is not None:
                enc.relay.stop()
                enc.relay = None
        with contextlib.suppress(SealroomError):
            self.persist()
        with contextlib.suppress(OSError):  # only when no enclave socket is left in it
            self.backend.run_dir.rmdir()

    def backoff(self) -> float:
        self.failures += 1
        c = self.config
        delay: float = min(c.backoff_max, c.backoff_base * 2.0 ** min(self.failures - 1, 30))
        return delay * _jitter.uniform(0.5, 1.0)

    def step(self) -> float:
        """One reconcile round; returns how long to wait before the next."""
        try:
            return self._step()
        except UnavailableError as e:
            delay = self.backoff()
            log.warning("control plane unavailable (%s); retrying in %.1f s", e.message, delay)
            return delay
        except AccessDeniedError as e:
            delay = self.backoff()
            log.error("control plane refused this agent (%s); retrying in %.1f s", e, delay)
            return delay
        except Exception as e:
            delay = self.backoff()
            log.exception("reconcile round failed (%s); retrying in %.1f s", e, delay)
            return delay
        finally:
            with contextlib.suppress(Exception):
                self.persist()

    def _step(self) -> float:
        now = time.time()
        self.backend.touch_alive()
        for enc in self.enclaves.values():
            try:
                enc.poll(now)
            except Exception as e:  # pragma: no cover - defensive
                log.exception("polling %s failed: %s", enc.computation_id, e)
        self.persist()
        self._upload_finished()
        self._forward_events()
        reply = self._heartbeat()  # every transition since the last round, in order
        if self._reconcile(reply.desired):
            # tell the control plane at once that the launch began (state "launching"):
            # the runtime takes a moment to listen, and the next round reports that
            self._heartbeat()
        interval = reply.heartbeat_interval or self.config.heartbeat
        self.interval = min(60.0, max(0.2, interval))
        return self.interval

    # ---- reporting --------------------------------------------------------------------------
    def _heartbeat(self) -> HeartbeatReply:
        report = self._report()
        reply = self.client.heartbeat(report)
        self.failures = 0
        for item in report.enclaves:
            enc = self.enclaves.get(item.computation_id)
            if enc is None:
                continue
            enc.reported(item.transitions)
            if any(t.state in OUTCOMES for t in item.transitions):
                enc.record.final_reported = True
                if not enc.record.stopped:
                    enc.stop()
                enc.set_state(State.DESTROYED, "enclave stopped")
        return reply

    def resources(self) -> dict[str, int]:
        live = [
            (e.record.vcpus, e.record.memory_mb)
            for e in self.enclaves.values()
            if not e.state.final and not e.record.stopped
        ]
        return machine_resources(self.config.data_dir, self.config.reserve, live)

    def _blobs_done(self, enc: ProcessEnclave) -> bool:
        if enc.state not in OUTCOMES:
            return True
        if not enc.outbox_ready():
            return False
        return all(name in enc.record.uploaded for name, _ in enc.outbox_blobs())

    def _report(self) -> Heartbeat:
        return Heartbeat(
            resources=Resources(**self.resources()),
            tee_kinds=list(self.backend.tee_kinds),
            enclaves=[
                EnclaveReport(
                    computation_id=cid,
                    # an outcome only once its receipt and results are stored
                    transitions=enc.pending(outcome_ready=self._blobs_done(enc)),
                    endpoint=enc.endpoint,
                    stats=enc.stats(),
                )
                for cid, enc in self.enclaves.items()
            ],
        )

    def _upload_finished(self) -> None:
        """Start uploading finished outboxes, each on its own thread: a large result
        must not hold up heartbeats (the control plane would take the host for lost)."""
        for cid, enc in self.enclaves.items():
            if enc.state not in OUTCOMES:
                continue
            if not enc.outbox_ready():
                continue
            todo = [(n, p) for n, p in enc.outbox_blobs() if n not in enc.record.uploaded]
            running = self._uploads.get(cid)
            if not todo or (running is not None and running.is_alive()):
                continue
            t = threading.Thread(
                target=self._upload, args=(cid, enc, todo), name=f"upload-{cid}", daemon=True
            )
            self._uploads[cid] = t
            t.start()

    def _upload(self, cid: str, enc: ProcessEnclave, todo: list[tuple[str, Path]]) -> None:
        for name, path in todo:
            try:
                self.client.put_blob(cid, name, path)
                log.info("uploaded %s of %s", name, cid)
            except (NotFoundError, InvalidInputError, ConflictError, AccessDeniedError) as e:
                # the control plane will never take it: do not retry forever
                log.error("blob %s of %s refused: %s", name, cid, e.message)
            except (SealroomError, OSError) as e:
                log.warning("uploading %s of %s failed (%s); retrying next round", name, cid, e)
                return
            with self._lock:
                enc.record.uploaded.append(name)

    def _forward_events(self) -> None:
        for cid, enc in self.enclaves.items():
            while enc.pending_events:
                batch = sorted(enc.pending_events, key=lambda e: e["seq"])[:EVENT_BATCH]
                # only public lifecycle events are relayed (the control plane refuses others)
                relay = [e for e in batch if e["type"] in FORWARDABLE_EVENTS]
                try:
                    if relay:
                        self.client.post_events(cid, [AgentEvent.model_validate(e) for e in relay])
                except (NotFoundError, InvalidInputError, ConflictError, AccessDeniedError) as e:
                    log.error("events of %s refused: %s", cid, e.message)
                enc.events_acked(batch[-1]["seq"])

    # ---- acting on desired -------------------------------------------------------------------
    def _reconcile(self, desired: list[Desired]) -> bool:
        """Act on ``desired``; True when something was launched."""
        run_ids: set[str] = set()
        launched = False
        for d in desired:
            cid, action = d.computation_id, d.action
            if not cid:
                continue
            if action == "run":
                run_ids.add(cid)
                if cid not in self.enclaves and cid not in self.launched:
                    self._launch(cid, d.manifest, d.tee or "sim")
                    launched = True
            elif action == "stop" and cid in self.enclaves:
                log.info("stopping %s (control plane asked)", cid)
                self._drop(cid)
        for cid, enc in list(self.enclaves.items()):
            if cid in run_ids:
                self._missing.pop(cid, None)
                continue
            if enc.record.final_reported:
                self._drop(cid)
                continue
            # a live enclave the control plane no longer wants: after a few rounds
            self._missing[cid] = self._missing.get(cid, 0) + 1
            if self._missing[cid] >= MISSING_BEFORE_STOP and not enc.state.final:
                log.info("stopping %s: no longer desired", cid)
                self._drop(cid)
        return launched

    def _launch(self, cid: str, manifest: Any, tee: str) -> None:
        # Persist the decision first: if the agent dies mid-launch it reports the
        # computation lost on restart rather than launching it twice.
        self.launched.add(cid)
        placeholder = EnclaveRecord(
            computation_id=cid, manifest_hash="", dir="", socket="", outbox="", log=""
        )
        placeholder.launched_at = time.time()
        self.enclaves[cid] = ProcessEnclave(placeholder, self.backend.timeouts)
        self.persist()
        try:
            if not manifest:
                raise InvalidInputError("desired state carries no manifest object")
            busy = [e.record.cpus for e in self.enclaves.values() if not e.state.final]
            enc = self.backend.start(cid, manifest, tee, busy_cpus=busy)
        except SealroomError as e:
            self.enclaves[cid].set_state(State.FAILED, f"launch failed: {e.message}")
            placeholder.stopped = True
            log.error("launching %s failed: %s", cid, e.message)
            return
        except Exception as e:  # pragma: no cover - defensive
            self.enclaves[cid].set_state(State.FAILED, f"launch failed: {e}")
            placeholder.stopped = True
            log.exception("launching %s failed", cid)
            return
        self.enclaves[cid] = enc
        self.persist()
        log.info("launched %s (pid %d)", cid, enc.record.pid)

    def _drop(self, cid: str) -> None:
        enc = self.enclaves.pop(cid, None)
        self._missing.pop(cid, None)
        if enc is None:
            return
        enc.stop()
        if enc.record.dir:
            enc.remove_files()
        self.persist()

    def persist(self) -> None:
        with self._lock:
            self.store.save({c: e.record for c, e in self.enclaves.items()}, self.launched)


JOIN_TOKEN_ENV = "SEALROOM_JOIN_TOKEN"  # noqa: S105 - the variable's name, not a secret


def join_token_from(path: Path | None) -> str:
    """The one-time join token from ``path`` (a file, first line) or else the
    SEALROOM_JOIN_TOKEN environment variable, never from argv (``ps`` shows argv to every
    user). The variable is removed from this process's environment once read, so the
    enclaves this agent starts do not inherit it."""
    from_env = os.environ.pop(JOIN_TOKEN_ENV, "").strip()
    if path is None:
        return from_env
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InvalidInputError(
            f"--join-token-file {path}: cannot read ({e.strerror or e})",
            code="join-token-unreadable",
        ) from e
    token = lines[0].strip() if lines else ""
    if not token:
        raise InvalidInputError(
            f"--join-token-file {path} is empty; want the token from `sealroom host join-token`",
            code="join-token-unreadable",
        )
    return token


def _cpu_pool(reserve: int) -> list[int]:
    cpus = sorted(os.sched_getaffinity(0))
    if 0 < reserve < len(cpus):
        return cpus[reserve:]
    return cpus if cpu_count() else [0]


def serve(config: AgentConfig) -> int:
    """Run the agent in the foreground until SIGTERM/SIGINT (enclaves keep running)."""
    import signal

    agent = Agent(config)

    def on_signal(signum: int, frame: object) -> None:
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
    return 0
