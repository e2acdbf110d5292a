"""The ``process`` backend: each enclave is a separate runtime process on this host.

Per computation, under DATA_DIR/enclaves/<id>/:

- ``manifest.json`` (as the control plane sent it), ``outbox/`` (the runtime leaves its
  receipt and sealed results there), ``runtime.jsonl`` (the runtime's stdout: host-visible
  state and event lines; a file, not a pipe, so an agent restart loses nothing) and
  ``runtime.err``;
- a sim TEE service process (``sealroom.hostagent.simtee``) fixing MEASUREMENT (hash of the
  runtime code) and HOST_DATA (the manifest hash);
- the runtime (``python -m sealroom.runtime ... --listen unix:SOCK --outbox DIR``) started
  through ``sealroom.hostagent.limitexec``: CPU affinity to ``limits.vcpus`` CPUs (the
  least-used ones this agent offers), RLIMIT_DATA = memory_mb + 1 GiB and, except for wasm
  algorithms (wasmtime reserves large guard regions), RLIMIT_AS = memory_mb + 4 GiB: the
  runtime, its threads and its sandbox all live inside these; the sandbox applies the
  manifest's exact limits to the algorithm itself;
- a relay from a TCP port on 127.0.0.1 to the runtime's Unix socket (in the agent).

Both processes stay in the agent's process group: signalling the group (Ctrl-C, `sealroom
down`) ends them with it, while the agent process alone dying (a crash, SIGKILL of its
pid) leaves them running; the restarted agent re-adopts them (a new relay, the log
re-read) or reports them lost. An agent that does not come back within
``orphan_timeout`` (default 30 s) has its enclaves stopped by their sim TEE service's
watchdog.

TTL: an enclave that does not start within ``Timeouts.launch``, is still awaiting inputs
``Timeouts.inputs`` after it started listening, or is still running
``limits.wall_seconds + Timeouts.run_grace`` after its run started is destroyed and
reported failed with that reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealroom import paths
from sealroom.errors import InvalidInputError, UnavailableError
from sealroom.files import wipe_tree
from sealroom.hostagent.launcher import runtime_measurement
from sealroom.hostagent.relay import TcpToUnixRelay
from sealroom.hostagent.simtee import pid_alive
from sealroom.hostagent.state import EnclaveRecord
from sealroom.manifest import Manifest
from sealroom.protocol.agent import Transition
from sealroom.protocol.lifecycle import OUTCOMES, State, allowed
from sealroom.protocol.runtime_lines import (
    EnclaveEventLine,
    ErrorLine,
    Listening,
    StateLine,
    parse_runtime_line,
)

RUNTIME_DATA_OVERHEAD_MB = 1024
RUNTIME_AS_OVERHEAD_MB = 4096
_SUN_PATH_BUDGET = 80
#: An enclave whose agent has not been alive for this long is stopped (simtee.py). The
#: agent touches its liveness file every second from its own thread, so this only has to
#: cover an agent restart (re-adoption), not control-plane outages.
ORPHAN_TIMEOUT = 30.0
_ID_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Timeouts:
    launch: float = 60.0
    inputs: float = 3600.0
    run_grace: float = 60.0
    outbox: float = 15.0  # after a final state line, how long to wait for DONE
    stop: float = 10.0  # SIGTERM, then SIGKILL


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_ours(pid: int, marker: str) -> bool:
    """The pid still runs the process we started (guards against pid reuse)."""
    return pid > 0 and pid_alive(pid) and os.fsencode(marker) in _cmdline(pid)


def _terminate(pid: int, marker: str, popen: subprocess.Popen[bytes] | None, wait: float) -> None:
    if popen is not None:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(wait)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        return
    if not _is_ours(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class RelayAddress:
    """Where enclaves' relays listen and the address parties are given for them
    (`agent run --listen/--advertise`): 127.0.0.1 unless the operator opens them up."""

    listen: str = "127.0.0.1"
    advertise: str | None = None


class ProcessEnclave:
    """One enclave: its persisted record, its processes, its relay, its log."""

    def __init__(
        self,
        record: EnclaveRecord,
        timeouts: Timeouts,
        runtime: subprocess.Popen[bytes] | None = None,
        tee: subprocess.Popen[bytes] | None = None,
        relay_address: RelayAddress | None = None,
    ) -> None:
        self.record = record
        self.relay_address = relay_address or RelayAddress()
        self.timeouts = timeouts
        self._runtime = runtime
        self._tee = tee
        self._offset = 0
        self._partial = b""
        self.relay: TcpToUnixRelay | None = None
        self.pending_events: list[dict[str, Any]] = []
        self._pending_seqs: set[int] = set()
        self._final_seen_at = 0.0

    # ---- identity ---------------------------------------------------------------------
    @property
    def computation_id(self) -> str:
        return self.record.computation_id

    @property
    def state(self) -> State:
        return State(self.record.state)

    @property
    def endpoint(self) -> str | None:
        if self.relay is None or self.state.final:
            return None
        return self.relay.endpoint

    def runtime_alive(self) -> bool:
        if self._runtime is not None:
            return self._runtime.poll() is None
        return _is_ours(self.record.pid, self.record.socket)

    # ---- transitions and what the control plane has been told ------------------------------
    def set_state(self, state: State, reason: str = "") -> bool:
        """Enter ``state`` if the lifecycle allows it from here (a repeat or a move it does
        not allow changes nothing: e.g. the runtime's "completed" after the agent failed
        the enclave for its TTL); each entered state is queued for the control plane."""
        rec = self.record
        if state == self.state or not allowed(self.state, state):
            return False
        rec.state = state.value
        rec.reason = reason
        rec.unreported.append([state.value, reason])
        return True

    def pending(self, outcome_ready: bool) -> list[Transition]:
        """The transitions to report now, oldest first. An outcome (and what follows it)
        waits until ``outcome_ready`` (its receipt and results are stored)."""
        out: list[Transition] = []
        for raw, reason in self.record.unreported:
            state = State(raw)
            if state in OUTCOMES and not outcome_ready:
                break
            out.append(Transition(state=state, reason=reason))
        return out

    def reported(self, sent: list[Transition]) -> None:
        """The control plane took ``sent`` (a prefix of the queue)."""
        if not sent:
            return
        self.record.unreported = self.record.unreported[len(sent) :]
        self.record.reported_state = sent[-1].state.value

    # ---- reading the runtime's lines ------------------------------------------------------
    def _read_lines(self) -> list[dict[str, Any]]:
        try:
            with open(self.record.log, "rb") as f:
                f.seek(self._offset)
                data = f.read(4 << 20)
        except OSError:
            return []
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        out = []
        for raw in complete:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def _apply(self, raw: dict[str, Any], now: float) -> None:
        rec = self.record
        line = parse_runtime_line(raw)  # the runtime's own line models (protocol)
        if isinstance(line, Listening):
            if not rec.listening_at:
                rec.listening_at = now
            self.set_state(State.AWAITING_INPUTS)
            self._open_relay()
        elif isinstance(line, StateLine):
            if self.state.final:
                return  # the agent already decided (TTL, stop): keep that
            self.set_state(line.state, line.reason)
            if line.state == State.RUNNING and not rec.running_at:
                rec.running_at = now
            if line.state in OUTCOMES:
                self._final_seen_at = now
        elif isinstance(line, EnclaveEventLine):
            seq = line.seq
            if seq > rec.events_sent and seq not in self._pending_seqs:
                self._pending_seqs.add(seq)
                self.pending_events.append(
                    {
                        "seq": seq,
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                        "type": line.type,
                        "message": line.message,
                    }
                )
        elif isinstance(line, ErrorLine) and not self.state.final:
            rec.reason = f"enclave runtime refused to start: {line.message}"

    def _open_relay(self) -> None:
        if self.relay is not None:
            return
        sock, a = Path(self.record.socket), self.relay_address
        try:
            self.relay = TcpToUnixRelay(
                sock, port=self.record.port, host=a.listen, advertise=a.advertise
            ).start()
        except InvalidInputError:  # the old port is taken now: any free one
            self.relay = TcpToUnixRelay(sock, host=a.listen, advertise=a.advertise).start()
        self.record.port = self.relay.port

    def events_acked(self, upto: int) -> None:
        self.record.events_sent = max(self.record.events_sent, upto)
        self.pending_events = [e for e in self.pending_events if e["seq"] > upto]
        self._pending_seqs = {e["seq"] for e in self.pending_events}

    # ---- progress, TTL -----------------------------------------------------------------------
    def poll(self, now: float | None = None) -> State:
        now = time.time() if now is None else now
        for line in self._read_lines():
            self._apply(line, now)
        rec = self.record
        state = self.state
        if state.final:
            return state
        if not self.runtime_alive():
            for line in self._read_lines():  # its last words
                self._apply(line, now)
            if self.state.final:
                return self.state
            code = self._runtime.returncode if self._runtime is not None else None
            self.set_state(
                State.FAILED,
                rec.reason
                or (
                    f"enclave runtime exited (code {code}) before finishing"
                    if code is not None
                    else f"enclave runtime process {rec.pid} is gone"
                ),
            )
            self.stop()
            return self.state
        t = self.timeouts
        why = ""
        if state is State.LAUNCHING and now - rec.launched_at > t.launch:
            why = f"enclave did not start within {t.launch:g} s"
        elif state is State.AWAITING_INPUTS and now - rec.listening_at > t.inputs:
            why = (
                f"no progress: still awaiting inputs {now - rec.listening_at:.0f} s after the "
                f"enclave started (input timeout {t.inputs:g} s)"
            )
        elif state is State.RUNNING and now - rec.running_at > rec.wall_seconds + t.run_grace:
            why = (
                f"no progress: still running {now - rec.running_at:.0f} s after the run "
                f"started, past limits.wall_seconds={rec.wall_seconds} + grace {t.run_grace:g} s"
            )
        if why:
            self.destroy(why)
        return self.state

    def destroy(self, reason: str) -> None:
        self.stop()
        self.set_state(State.FAILED, reason)

    def outbox_ready(self, now: float | None = None) -> bool:
        """DONE is there, or the runtime will not write it (gave up waiting)."""
        if (Path(self.record.outbox) / "DONE").exists():
            return True
        now = time.time() if now is None else now
        return not self._final_seen_at or now - self._final_seen_at > self.timeouts.outbox

    def outbox_blobs(self) -> list[tuple[str, Path]]:
        """(blob name, file): "receipt", "result.<consumer>" and "log.<reader>", only once
        DONE exists."""
        box = Path(self.record.outbox)
        if not (box / "DONE").exists():
            return []
        out: list[tuple[str, Path]] = []
        if (box / "receipt.json").is_file():
            out.append(("receipt", box / "receipt.json"))
        for pattern in ("result.*.sealed", "log.*.sealed"):
            for p in sorted(box.glob(pattern)):
                out.append((p.name.removesuffix(".sealed"), p))
        return out

    def stats(self) -> dict[str, Any]:
        pid = self.record.pid
        out: dict[str, Any] = {"vcpus": self.record.vcpus, "memory_mb": self.record.memory_mb}
        if not pid or self.record.stopped:
            return out
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            tick = os.sysconf("SC_CLK_TCK")
            out["cpu_seconds"] = round(sum(int(x) for x in fields[11:15]) / tick, 2)
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
        except (OSError, ValueError, IndexError):
            pass
        if self.record.launched_at:
            out["uptime_seconds"] = round(time.time() - self.record.launched_at, 1)
        return out

    # ---- end -------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
            self.relay = None
        rec = self.record
        _terminate(rec.pid, rec.socket, self._runtime, self.timeouts.stop)
        _terminate(rec.tee_pid, "sealroom.hostagent.simtee", self._tee, self.timeouts.stop)
        rec.stopped = True

    def remove_files(self) -> None:
        # The runtime wipes its own storage; this also takes what a killed one left.
        wipe_tree(Path(self.record.dir))
        for p in (Path(self.record.socket), Path(self.record.socket).with_suffix(".tee")):
            with contextlib.suppress(OSError):
                p.unlink()


def default_sim_authority() -> Path:
    """The host's sim authority: the same one ``sealroom enclave run`` and ``sealroom sim``
    use ($SEALROOM_HOME/sim-authority, else ~/.local/share/sealroom/sim-authority), so
    parties on this machine verify against one SIMULATED root."""
    return paths.sim_authority()


class ProcessBackend:
    """Starts and adopts :class:`ProcessEnclave` s under ``data_dir``."""

    name = "process"
    tee_kinds = ("sim",)

    def __init__(
        self,
        data_dir: Path,
        *,
        timeouts: Timeouts | None = None,
        cpus: list[int] | None = None,
        authority_dir: Path | None = None,
        orphan_timeout: float = ORPHAN_TIMEOUT,
        relay_address: RelayAddress | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.orphan_timeout = orphan_timeout
        self.relay_address = relay_address or RelayAddress()
        self.alive_file = data_dir / "agent.alive"
        self.timeouts = timeouts or Timeouts()
        self.cpus = cpus if cpus is not None else sorted(os.sched_getaffinity(0))
        self.authority_dir = authority_dir or default_sim_authority()
        (data_dir / "enclaves").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.run_dir = self._run_dir()
        self._measurement: bytes | None = None

    def _run_dir(self) -> Path:
        """Where the Unix sockets live: DATA_DIR/run, or a short private directory in the
        system temp dir when DATA_DIR is too deep for a socket path (108 bytes)."""
        short = self.data_dir / "run"
        if len(os.fsencode(short)) + 24 > _SUN_PATH_BUDGET:
            tag = hashlib.sha256(os.fsencode(self.data_dir.resolve())).hexdigest()[:12]
            short = Path(tempfile.gettempdir()) / f"sealroom-agent-{tag}"
        short.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(short, 0o700)
        return short

    def touch_alive(self) -> None:
        """Tell the enclaves' watchdogs the agent is alive."""
        self.alive_file.touch()

    def measurement(self) -> bytes:
        if self._measurement is None:
            self._measurement = runtime_measurement()
        return self._measurement

    def allocate_cpus(self, vcpus: int, busy: list[list[int]]) -> list[int]:
        """``vcpus`` CPUs, least used first (by the enclaves already running)."""
        if vcpus >= len(self.cpus):
            return list(self.cpus)
        load = Counter(c for cpus in busy for c in cpus)
        return sorted(sorted(self.cpus, key=lambda c: (load[c], c))[:vcpus])

    def start(
        self,
        computation_id: str,
        manifest_doc: dict[str, Any],
        tee: str = "sim",
        *,
        busy_cpus: list[list[int]] | None = None,
    ) -> ProcessEnclave:
        if tee != "sim":
            raise InvalidInputError(
                f"the process backend runs tee 'sim' only, not {tee!r}", code="tee-unsupported"
            )
        manifest = Manifest.from_dict(manifest_doc)
        lim = manifest.limits
        safe = _ID_SAFE.sub("_", computation_id)[:64]
        encdir = self.data_dir / "enclaves" / safe
        encdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        outbox = encdir / "outbox"
        outbox.mkdir(exist_ok=True, mode=0o700)
        (encdir / "manifest.json").write_text(json.dumps(manifest_doc))
        tag = hashlib.sha256(computation_id.encode()).hexdigest()[:16]
        sock = self.run_dir / f"{tag}.sock"
        tee_sock = self.run_dir / f"{tag}.tee"
        pid_file = encdir / "runtime.pid"
        pid_file.unlink(missing_ok=True)
        cpus = self.allocate_cpus(lim.vcpus, busy_cpus or [])
        record = EnclaveRecord(
            computation_id=computation_id,
            manifest_hash=manifest.manifest_hash.hex(),
            dir=str(encdir),
            socket=str(sock),
            outbox=str(outbox),
            log=str(encdir / "runtime.jsonl"),
            cpus=cpus,
            vcpus=lim.vcpus,
            memory_mb=lim.memory_mb,
            wall_seconds=lim.wall_seconds,
            launched_at=time.time(),
        )
        tee_proc = self._start_tee(manifest.manifest_hash, tee_sock, pid_file, encdir)
        record.tee_pid = tee_proc.pid
        limit_args = [
            "--cpus",
            ",".join(map(str, cpus)),
            "--data",
            str((lim.memory_mb + RUNTIME_DATA_OVERHEAD_MB) << 20),
        ]
        if manifest.algorithm.kind != "wasm":
            limit_args += ["--as", str((lim.memory_mb + RUNTIME_AS_OVERHEAD_MB) << 20)]
        cmd = [
            sys.executable,
            "-m",
            "sealroom.hostagent.limitexec",
            *limit_args,
            "--",
            sys.executable,
            "-m",
            "sealroom.runtime",
            "--manifest",
            str(encdir / "manifest.json"),
            "--tee",
            f"sim:{tee_sock}",
            "--listen",
            f"unix:{sock}",
            "--outbox",
            str(outbox),
            "--workdir",
            str(encdir / "storage"),
        ]
        with open(record.log, "ab") as out, open(encdir / "runtime.err", "ab") as err:
            try:
                proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter, sealroom
                    cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL
                )
            except OSError as e:
                _terminate(tee_proc.pid, "", tee_proc, self.timeouts.stop)
                raise UnavailableError(f"cannot start the enclave runtime: {e}") from e
        record.pid = proc.pid
        pid_file.write_text(str(proc.pid))
        return ProcessEnclave(
            record, self.timeouts, runtime=proc, tee=tee_proc, relay_address=self.relay_address
        )

    def _start_tee(
        self, host_data: bytes, tee_sock: Path, pid_file: Path, encdir: Path
    ) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "sealroom.hostagent.simtee",
            "--authority",
            str(self.authority_dir),
            "--measurement",
            self.measurement().hex(),
            "--host-data",
            host_data.hex(),
            "--socket",
            str(tee_sock),
            "--watch-pid-file",
            str(pid_file),
            "--agent-alive",
            str(self.alive_file),
            "--orphan-timeout",
            str(self.orphan_timeout),
        ]
        with open(encdir / "simtee.err", "ab") as err:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter, sealroom
                cmd,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.stdout.close()
        try:
            ready = json.loads(line) if line else {}
        except ValueError:
            ready = {}
        if ready.get("event") != "ready":
            _terminate(proc.pid, "", proc, self.timeouts.stop)
            raise UnavailableError(
                f"the sim TEE service did not start: {ready.get('message', repr(line[:200]))}"
            )
        return proc

    def adopt(self, record: EnclaveRecord) -> ProcessEnclave:
        """Take over an enclave an earlier agent process launched. A live runtime gets a
        new relay once its log is re-read; a gone one is reported lost."""
        enc = ProcessEnclave(record, self.timeouts, relay_address=self.relay_address)
        if record.stopped or enc.state.final:
            return enc
        if not _is_ours(record.pid, record.socket):
            for line in enc._read_lines():
                enc._apply(line, time.time())
            if not enc.state.final:
                enc.set_state(
                    State.FAILED,
                    f"enclave runtime process {record.pid} is gone (found on agent restart)",
                )
                enc.stop()
            return enc
        enc.poll()
        return enc
