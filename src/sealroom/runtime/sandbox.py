"""Run an untrusted algorithm (python, wasm or binary) inside bubblewrap, with limits.

Design and threat model: docs/adr/0010-sandbox.md. In short:

- bubblewrap gives the algorithm its own mount, pid, network (loopback only, not the
  host's), IPC, UTS and cgroup namespaces; the filesystem it sees is built from nothing:
  read-only system directories (/usr, the /lib* links, /etc/ld.so.cache), the enclave's
  Python interpreter prefix (its site-packages masked), /algorithm and /inputs read-only,
  /results read-write, a size-limited tmpfs /tmp and /dev/shm, a fresh /proc, a minimal
  /dev. The root of that tree is read-only.
- The algorithm never runs with uid 0: when the runtime is root, the outer bubblewrap
  builds the view and a small launcher drops to a dedicated host uid (SANDBOX_HOST_UID)
  and starts an inner bubblewrap with a user namespace in which creating further user
  namespaces is disabled; as non-root, one bubblewrap with a user namespace does both.
  Because the uid is not 0, RLIMIT_NPROC really limits processes (fork bombs), and no
  capability survives.
- Each sandbox runs in a cgroup of its own (memory, pids, cpuset or cpu; v2 or v1 as the
  host has them, see cgroups.py and docs/adr/0018-sandbox-cgroups-and-seccomp.md): the
  limits hold for the sandbox as a whole, and an out-of-memory kill is reported as such.
- A seccomp filter (seccomp.py, built by libseccomp, loaded by bubblewrap) makes the
  system calls no algorithm needs (ptrace, mount, bpf, io_uring, keyctl, ...) answer EPERM
  and kills calls through another ABI (i386, x32).
- rlimits (address space / data, file size, processes, CPU, core) are set in the sandbox
  before the algorithm starts, as a second fence; the wall-time limit and the
  results-size limit are enforced here, from outside, by killing the whole sandbox.
- No fallback: if bubblewrap is missing or does not work, no cgroup can be made or no
  seccomp filter built, SandboxUnavailableError.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.util
import json
import logging
import math
import os
import secrets
import selectors
import signal
import site
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from sealroom.errors import InvalidInputError, UnavailableError
from sealroom.protocol.service import BRIDGE_DIR, EGRESS_PROXY_SOCKET, INGRESS_SOCKET
from sealroom.runtime import cgroups, seccomp
from sealroom.runtime.archive import MAX_TREE_DEPTH

log = logging.getLogger(__name__)

AlgorithmKind = Literal["python", "wasm", "binary"]

# Host uid/gid the algorithm runs as when the runtime is root. Reserved for the sandbox:
# nothing else on the machine may use it (RLIMIT_NPROC counts every process of a uid).
SANDBOX_HOST_UID = 1_590_000_000
SANDBOX_HOST_GID = 1_590_000_000
# Each run leases its own uid (and the gid of the same number) from this range.
UID_RANGE = 4096
UID_LOCK_DIR = Path("/run/sealroom-sandbox-uids")
# The uid/gid the algorithm sees inside its user namespace ("nobody").
SANDBOX_UID = 65534
SANDBOX_GID = 65534

BWRAP_CANDIDATES = ("/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap")
LAUNCHER = Path(__file__).with_name("_launcher.py")
SANDBOX_DIR = "/opt/sealroom"
# The sandbox's own processes that count against RLIMIT_NPROC next to the algorithm's:
# the inner bubblewrap (root mode) or the namespace's init (non-root mode), and stage 2.
SANDBOX_OWN_PROCESSES = 2
# wasmtime and the Python runner need memory beyond the wasm linear memory itself.
WASM_RUNTIME_OVERHEAD = 256 * 2**20
# The wasm runner stops the module at the deadline itself; the hard kill comes this later.
WASM_KILL_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.25
# Paths inside the sandbox (its own tmpfs mounts, not the host's /tmp).
SANDBOX_TMP = "/tmp"  # noqa: S108
SANDBOX_SHM = "/dev/shm"  # noqa: S108
PROBE_SECONDS = 30.0
# Processes of the sandbox itself inside its cgroup next to the algorithm's (which count
# against max_processes, the algorithm's own first process included): the namespace's
# init and stage 2, and in root mode the inner bubblewrap. pids.max counts threads too.
SANDBOX_CGROUP_OWN_PROCESSES = {True: 3, False: 2}  # keyed by "the runtime is root"
# RLIMIT_NPROC is the second fence behind pids.max, a little looser so the cgroup decides.
NPROC_SLACK = 4
# Set to "1" to run untrusted code even where no cgroup can be made (the limits are then
# per process only). Anything else, or unset: no cgroup, no run.
UNSAFE_NO_CGROUP_ENV = "SEALROOM_SANDBOX_UNSAFE_NO_CGROUP"


@dataclass(frozen=True)
class Limits:
    """Resource limits for one run (from the manifest)."""

    vcpus: int = 1
    memory_bytes: int = 512 * 2**20
    wall_seconds: float = 60.0
    max_result_bytes: int = 10 * 2**20
    max_processes: int = 64
    max_output_bytes: int = 64 * 1024  # captured stdout+stderr kept (and streamed)
    tmp_bytes: int = 64 * 2**20  # size of the scratch tmpfs at /tmp
    max_result_files: int = 10_000  # entries (files + directories) under /results
    wasm_fuel: int | None = None  # optional deterministic instruction budget for wasm

    def __post_init__(self) -> None:
        for name in (
            "vcpus",
            "memory_bytes",
            "max_result_bytes",
            "max_processes",
            "tmp_bytes",
            "max_result_files",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)}")
        if not (self.wall_seconds > 0 and math.isfinite(self.wall_seconds)):
            raise ValueError(f"Limits.wall_seconds must be positive, got {self.wall_seconds}")
        if self.max_output_bytes < 0:
            raise ValueError(f"Limits.max_output_bytes must be >= 0, got {self.max_output_bytes}")
        if self.wasm_fuel is not None and self.wasm_fuel < 1:
            raise ValueError(f"Limits.wasm_fuel must be positive, got {self.wasm_fuel}")


@dataclass(frozen=True)
class ServiceNet:
    """A long-running service's network (docs/adr/0032): the sandbox keeps its own
    network namespace (loopback only); the launcher inside bridges ``BRIDGE_DIR/ingress.sock``
    (a Unix socket the enclave connects to) to 127.0.0.1:``port`` where the workload
    listens, and 127.0.0.1:``egress_ports[i]`` to ``BRIDGE_DIR/egress-<i>.sock`` (the
    enclave connects those to the allow-listed destinations). Nothing else leaves.
    ``bridge_dir`` is the host directory mounted there; ``env`` the spec's variables."""

    bridge_dir: Path
    port: int
    egress_ports: tuple[int, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    egress_names: tuple[str, ...] = ()
    #: Packages of the enclave's own interpreter the workload may import (read-only at
    #: RUNTIME_SITE/<name>); only names in RUNTIME_PACKAGES (the model server's
    #: onnxruntime and numpy, docs/adr/0040). Service specs cannot ask for them.
    packages: tuple[str, ...] = ()
    #: The in-enclave egress proxy's port inside the sandbox (docs/adr/0041), bridged to
    #: ``BRIDGE_DIR/EGRESS_PROXY_SOCKET``; HTTPS_PROXY/HTTP_PROXY point at it.
    proxy_port: int | None = None
    #: Called (once, after the sandbox was killed) when a network interface other than
    #: loopback appears in the sandbox's namespace: a breach (docs/adr/0041).
    on_interfaces: Callable[[int], None] | None = field(default=None, compare=False)


RUNTIME_SITE = "/opt/sealroom/site"
#: Compiled packages the enclave image provides to a workload (name -> the directories
#: a package's import needs, relative to its site-packages directory).
RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy", "numpy.libs"),
    "onnxruntime": ("onnxruntime",),
}


def _runtime_package_dirs(names: Sequence[str]) -> list[tuple[str, str]]:
    """(host directory, sandbox path) for each directory the named packages need."""
    out: list[tuple[str, str]] = []
    for name in names:
        if name not in RUNTIME_PACKAGES:
            raise ValueError(f"{name!r} is not a runtime-provided package")
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SandboxUnavailableError(f"package {name} is not installed in the enclave")
        site_dir = Path(spec.origin).resolve().parent.parent
        for d in RUNTIME_PACKAGES[name]:
            host = site_dir / d
            if host.is_dir():
                out.append((os.fspath(host), f"{RUNTIME_SITE}/{d}"))
    return out


@dataclass(frozen=True)
class RunOutcome:
    """How a sandboxed run ended. ``reason`` is one line a person can read."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    reason: str
    started_at: datetime
    ended_at: datetime
    stdout: bytes = field(repr=False)
    stderr: bytes = field(repr=False)
    output_truncated: bool

    @property
    def ok(self) -> bool:
        return self.reason == "ok" and self.exit_code == 0 and not self.timed_out


class SandboxUnavailableError(UnavailableError):
    """bubblewrap is missing or cannot build the sandbox: untrusted code is not run."""

    code = "sandbox-unavailable"


# ---- probing ------------------------------------------------------------------------------

_probe_lock = threading.Lock()
_probe_failure: str | None = None
_probed = False


def check_sandbox() -> None:
    """Probe bubblewrap once (the real sandbox, same flags); raise if it does not work.

    The probe starts the full sandbox with a launcher self-check and requires: a non-zero
    uid, no capabilities, no_new_privs, only the loopback interface, and a root directory
    holding only what the sandbox put there. It runs in a cgroup of its own like every
    sandbox, so a host where none can be made fails here (unless UNSAFE_NO_CGROUP_ENV).
    The result (either way) is cached.
    """
    global _probe_failure, _probed
    with _probe_lock:
        if not _probed:
            _probe_failure = _probe()
            _probed = True
        failure = _probe_failure
    if failure is not None:
        raise SandboxUnavailableError(f"algorithm sandbox unavailable: {failure}")


def _probe() -> str | None:
    if _bwrap() is None:
        return f"bubblewrap (bwrap) not found in {', '.join(BWRAP_CANDIDATES)}"
    with tempfile.TemporaryDirectory(prefix="sealroom-probe-") as tmp:
        base = Path(tmp)
        for d in ("algorithm", "inputs", "results"):
            (base / d).mkdir()
        (base / "algorithm" / "probe").write_bytes(b"")
        limits = Limits(wall_seconds=PROBE_SECONDS, max_processes=8)
        try:
            outcome = _run("probe", base / "algorithm" / "probe", None, (), base, limits, None)
        except SandboxUnavailableError as e:
            return e.message
        if not outcome.ok:
            err = outcome.stderr.decode("utf-8", "replace").strip()
            return f"probe run failed ({outcome.reason}): {err}"
        try:
            report = json.loads(outcome.stdout)
        except ValueError:
            return f"probe printed no report: {outcome.stdout[:200]!r}"
    problems = []
    if report.get("uid") == 0:
        problems.append("algorithm would run as uid 0")
    if report.get("caps_empty") is not True:
        problems.append("algorithm would keep capabilities")
    if report.get("no_new_privs") is not True:
        problems.append("no_new_privs is not set")
    if report.get("interfaces") != ["lo"]:
        problems.append(f"network interfaces {report.get('interfaces')}, want only lo")
    if report.get("seccomp") != 2:
        problems.append(f"seccomp mode {report.get('seccomp')}, want 2 (filter)")
    if report.get("ptrace_errno") != errno.EPERM:
        problems.append(f"ptrace gave errno {report.get('ptrace_errno')}, want EPERM")
    return "; ".join(problems) if problems else None


# ---- the run ------------------------------------------------------------------------------


def run_algorithm(
    kind: AlgorithmKind,
    algorithm: Path,
    *,
    entrypoint: str | None,
    args: Sequence[str],
    inputs: Path,
    results: Path,
    limits: Limits,
    on_output: Callable[[str, bytes], None] | None = None,
    cancel: threading.Event | None = None,
    service: ServiceNet | None = None,
) -> RunOutcome:
    """Run ``algorithm`` in the sandbox and report how it ended.

    ``algorithm`` is a file (python script, .wasm module, executable) or a directory with
    ``entrypoint`` (a relative path inside it). For a single .wasm file, ``entrypoint``
    names the exported function to call (default ``_start``); a wasm module found in a
    directory is started at ``_start``.
    ``inputs`` is mounted read-only at /inputs, ``results`` read-write at /results (the
    working directory), the algorithm read-only at /algorithm (a file keeps its name:
    /algorithm/<name>). stdout/stderr go to ``on_output`` (bounded by
    ``limits.max_output_bytes``) and into the outcome; they are never logged.

    When the runtime is root, ``algorithm`` and ``inputs`` are made readable by the
    sandbox uid (other-read; keep them inside a private 0700 directory) and ``results``
    is handed to that uid.
    """
    if kind not in ("python", "wasm", "binary"):
        raise ValueError(f"unknown algorithm kind {kind!r}")
    check_sandbox()
    for name, p in (("inputs", inputs), ("results", results)):
        if not p.is_dir() or p.is_symlink():
            raise InvalidInputError(f"{name} {p} is not a directory")
    return _run(
        kind, algorithm, entrypoint, args, None, limits, on_output, inputs, results, cancel, service
    )


def _run(
    kind: str,
    algorithm: Path,
    entrypoint: str | None,
    args: Sequence[str],
    probe_base: Path | None,
    limits: Limits,
    on_output: Callable[[str, bytes], None] | None,
    inputs: Path | None = None,
    results: Path | None = None,
    cancel: threading.Event | None = None,
    service: ServiceNet | None = None,
) -> RunOutcome:
    """Run with a host uid of its own (root mode): RLIMIT_NPROC and the kernel's other
    per-uid accounting then never mix two computations, so a fork bomb in one cannot
    starve another sandbox on the same host."""
    lease = _UidLease() if os.geteuid() == 0 else contextlib.nullcontext(os.geteuid())
    with lease as uid:
        return _run_leased(
            kind,
            algorithm,
            entrypoint,
            args,
            probe_base,
            limits,
            on_output,
            inputs,
            results,
            host_uid=uid,
            cancel=cancel,
            service=service,
        )


class _UidLease:
    """An exclusive host uid from [SANDBOX_HOST_UID, +UID_RANGE), held by an flock on a
    per-uid lock file for the run, so concurrent runtimes on one host never share one."""

    def __init__(self) -> None:
        self.fd = -1
        self.uid = -1

    def __enter__(self) -> int:
        UID_LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        start = secrets.randbelow(UID_RANGE)
        for n in range(UID_RANGE):
            uid = SANDBOX_HOST_UID + (start + n) % UID_RANGE
            fd = os.open(UID_LOCK_DIR / str(uid), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.fd, self.uid = fd, uid
            return uid
        raise SandboxUnavailableError(f"all {UID_RANGE} sandbox uids are in use")

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1


def _run_leased(
    kind: str,
    algorithm: Path,
    entrypoint: str | None,
    args: Sequence[str],
    probe_base: Path | None,
    limits: Limits,
    on_output: Callable[[str, bytes], None] | None,
    inputs: Path | None = None,
    results: Path | None = None,
    *,
    host_uid: int,
    cancel: threading.Event | None = None,
    service: ServiceNet | None = None,
) -> RunOutcome:
    if probe_base is not None:
        inputs, results = probe_base / "inputs", probe_base / "results"
    assert inputs is not None and results is not None
    bwrap = _bwrap()
    if bwrap is None:
        raise SandboxUnavailableError("bubblewrap (bwrap) not found")
    algorithm = Path(os.path.abspath(algorithm))
    algo_mount, target, entry = _algorithm_layout(kind, algorithm, entrypoint)
    filter_ = _seccomp_filter()
    as_root = os.geteuid() == 0
    if as_root:
        # A single binary gets other-execute; inside a directory, files keep the owner's x.
        _grant_read(algorithm, executable=kind == "binary" and algorithm.is_file())
        _grant_read(inputs, executable=False)
        os.chown(results, host_uid, host_uid)
        os.chmod(results, 0o700)
        if service is not None:
            os.chown(service.bridge_dir, host_uid, host_uid)
            os.chmod(service.bridge_dir, 0o700)

    status_r, status_w = os.pipe()
    os.set_blocking(status_r, False)
    info_r, info_w = os.pipe()
    os.set_blocking(info_r, False)
    spec_fd = os.memfd_create("sealroom-spec")
    args_fd = os.memfd_create("sealroom-args")
    seccomp_fd = filter_.memfd()
    started = time.monotonic()
    deadline = started + limits.wall_seconds
    wasm_lib = _wasmtime_dir() if kind == "wasm" else None
    wheels = sorted(p.name for p in algorithm.glob("*.whl")) if algorithm.is_dir() else []
    spec = _spec(
        kind,
        target,
        entry,
        args,
        limits,
        as_root,
        bwrap,
        status_w,
        deadline,
        wheels,
        host_uid,
        service,
    )
    outer = _outer_args(
        as_root, limits, algorithm, algo_mount, inputs, results, spec_fd, wasm_lib, service
    )
    # bwrap loads the filter as the last step before it executes the sandbox's program: in
    # root mode that is the inner bwrap (the outer one's launcher still has to set up the
    # inner sandbox, which takes mount and namespace calls), otherwise the only one.
    if as_root:
        inner = spec["stage1"]["inner"]
        inner[inner.index("--") : inner.index("--")] = ["--seccomp", str(seccomp_fd)]
    else:
        outer += ["--seccomp", str(seccomp_fd)]
    os.write(spec_fd, json.dumps(spec).encode())
    os.lseek(spec_fd, 0, os.SEEK_SET)
    os.write(args_fd, b"".join(a.encode() + b"\0" for a in outer))
    os.lseek(args_fd, 0, os.SEEK_SET)
    kill_at = deadline + (WASM_KILL_GRACE_SECONDS if kind == "wasm" else 0.0)

    launcher = _python_cmd(_interpreter()[0], stage2=False)
    # bwrap waits on --block-fd after building the view and before it forks the
    # namespace's init and the launcher: the runtime moves bwrap's child into the cgroup
    # in between, so every process of the sandbox starts inside it.
    block_r, block_w = os.pipe()
    try:
        cgroup = _sandbox_cgroup(kind, limits, as_root)
    except BaseException:
        for fd in (status_r, status_w, info_r, info_w, spec_fd, args_fd, seccomp_fd):
            os.close(fd)
        for fd in (block_r, block_w):
            os.close(fd)
        raise
    started_at = datetime.now(UTC)
    try:
        # The arguments travel through --args so no host path shows in the sandbox's ps.
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                bwrap,
                *("--args", str(args_fd), "--info-fd", str(info_w)),
                *("--block-fd", str(block_r), "--", *launcher),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(args_fd, spec_fd, seccomp_fd, status_w, info_w, block_r),
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        os.close(block_w)
        _destroy(cgroup)
        raise SandboxUnavailableError(f"cannot start bubblewrap: {e}") from e
    except BaseException:
        os.close(status_r)
        os.close(info_r)
        os.close(block_w)
        _destroy(cgroup)
        raise
    finally:
        os.close(status_w)
        os.close(info_w)
        os.close(spec_fd)
        os.close(args_fd)
        os.close(seccomp_fd)
        os.close(block_r)
    sup = _Supervisor(
        proc, status_r, info_r, block_w, cgroup, limits, results, kill_at, on_output, cancel
    )
    sup.net_watch = service.on_interfaces if service is not None else None
    try:
        try:
            sup.loop()
        finally:
            sup.close()
            # Read before the cgroup goes: did the kernel kill anything for memory?
            sup.oom_kills = cgroup.oom_kills() if cgroup is not None else 0
    finally:
        _destroy(cgroup)
    ended_at = datetime.now(UTC)
    return sup.outcome(kind, limits, started_at, ended_at)


def _interfaces(pid: int) -> set[str]:
    """The interface names in the network namespace of ``pid`` (empty if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/net/dev").read_text()
    except OSError:
        return set()
    return {ln.split(":", 1)[0].strip() for ln in text.splitlines()[2:] if ":" in ln}


def _sandbox_cgroup(kind: str, limits: Limits, as_root: bool) -> cgroups.SandboxCgroup | None:
    """A fresh cgroup holding the run's limits, or None when explicitly allowed to go
    without. The CPUs are this process's first ``vcpus`` (the host agent pinned it)."""
    memory = limits.memory_bytes + (WASM_RUNTIME_OVERHEAD if kind == "wasm" else 0)
    cpus = tuple(sorted(os.sched_getaffinity(0))[: limits.vcpus])
    want = cgroups.CgroupLimits(
        memory_bytes=memory,
        max_pids=limits.max_processes + SANDBOX_CGROUP_OWN_PROCESSES[as_root],
        cpus=cpus,
    )
    try:
        return cgroups.SandboxCgroup.create(cgroups.detect(), want)
    except cgroups.CgroupUnavailableError as e:
        if os.environ.get(UNSAFE_NO_CGROUP_ENV) == "1":
            log.warning(
                "running untrusted code WITHOUT a cgroup (%s=1): memory, processes and CPUs "
                "are limited per process only: %s",
                UNSAFE_NO_CGROUP_ENV,
                e,
            )
            return None
        raise SandboxUnavailableError(
            f"no cgroup for the sandbox, so its limits could not hold for the whole "
            f"sandbox: {e} (set {UNSAFE_NO_CGROUP_ENV}=1 to run with per-process limits only)"
        ) from e


def _seccomp_filter() -> seccomp.Filter:
    try:
        return seccomp.sandbox_filter()
    except seccomp.SeccompUnavailableError as e:
        raise SandboxUnavailableError(f"no seccomp filter for the sandbox: {e}") from e


def _destroy(cgroup: cgroups.SandboxCgroup | None) -> None:
    if cgroup is not None:
        cgroup.destroy()


class _Supervisor:
    """Pumps output, enforces wall time and result size, then classifies the ending."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        status_r: int,
        info_r: int,
        block_w: int,
        cgroup: cgroups.SandboxCgroup | None,
        limits: Limits,
        results: Path,
        kill_at: float,
        on_output: Callable[[str, bytes], None] | None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.proc = proc
        self.cancel = cancel
        self.cancelled = False
        self.status_r = status_r
        self.info_r = info_r
        self.info_buf = bytearray()
        self.init_pid: int | None = None
        self.block_w = block_w
        self.cgroup = cgroup
        self.oom_kills = 0
        self.placement_error: str | None = None
        self.limits = limits
        self.results = results
        self.kill_at = kill_at
        self.on_output = on_output
        self.out: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.kept = 0
        self.truncated = False
        self.status_buf = bytearray()
        self.timed_out = False
        self.result_problem: str | None = None
        self.killed = False
        self.net_watch: Callable[[int], None] | None = None
        self.net_breach = False

    def _check_interfaces(self) -> None:
        """Only ``lo`` may exist in the sandbox's network namespace; anything else that
        appears (whoever made it) kills the sandbox and is reported as a breach."""
        if self.net_watch is None or self.init_pid is None or self.net_breach:
            return
        extra = _interfaces(self.init_pid) - {"lo"}
        if extra:
            self.net_breach = True
            self._kill()
            self.net_watch(len(extra))

    def _kill(self, *, leftovers: bool = False) -> None:
        if self.proc.poll() is None:
            if self.init_pid is not None:
                # Kill the sandbox's pid-namespace init: the kernel then kills every process
                # in the namespace before init is gone, and only then does the outer bwrap
                # exit, so when proc.wait() returns nothing of the sandbox is left.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.init_pid, signal.SIGKILL)
            else:
                # Not set up far enough to know init: the outer bwrap leads its own process
                # group, and init dies with it (--die-with-parent), taking the namespace.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            self.killed = self.killed or not leftovers

    def loop(self) -> None:
        sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream.fileno(), selectors.EVENT_READ, name)
        sel.register(self.status_r, selectors.EVENT_READ, "status")
        sel.register(self.info_r, selectors.EVENT_READ, "info")
        next_check = time.monotonic() + POLL_SECONDS
        exited_at: float | None = None
        try:
            while True:
                now = time.monotonic()
                wait = min(max(0.0, min(self.kill_at, next_check) - now), POLL_SECONDS)
                if sel.get_map():
                    for key, _ in sel.select(wait):
                        fd = int(key.fd)
                        try:
                            chunk = os.read(fd, 65536)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            sel.unregister(fd)
                            continue
                        self._take(str(key.data), chunk)
                elif self.proc.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=wait)
                now = time.monotonic()
                if self._finished():
                    # The algorithm's main process has ended: whatever it left behind
                    # (bwrap's init would wait for every last process) is killed now.
                    self._kill(leftovers=True)
                if not self.killed and now >= self.kill_at:
                    self.timed_out = True
                    self._kill()
                if not self.killed and self.cancel is not None and self.cancel.is_set():
                    self.cancelled = True  # the runtime is stopping: the sandbox goes first
                    self._kill()
                if not self.killed and now >= next_check:
                    next_check = now + POLL_SECONDS
                    self.result_problem = _results_problem(self.results, self.limits)
                    if self.result_problem is not None:
                        self._kill()
                    self._check_interfaces()
                if self.proc.poll() is not None:
                    if not sel.get_map():
                        break
                    # Everything in the sandbox died with it; give the pipes a moment to
                    # drain, then stop even if something still holds them.
                    exited_at = exited_at or now
                    if now - exited_at > 2.0:
                        break
        finally:
            sel.close()
            self._kill()  # no-op when it already ended; on an exception it must not live on
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def _place(self, pid: int) -> None:
        """Move bwrap's child (still blocked) into the cgroup, then let it go on."""
        try:
            if self.cgroup is not None:
                self.cgroup.add(pid)
        except OSError as e:
            self.placement_error = f"cannot move the sandbox into its cgroup: {e.strerror}"
            self._kill()
        else:
            with contextlib.suppress(OSError):
                os.write(self.block_w, b"x")
        self._unblock()

    def _unblock(self) -> None:
        # Closing without writing wakes bwrap too (EOF): only after the placement, or
        # once the sandbox is being killed anyway.
        if self.block_w >= 0:
            with contextlib.suppress(OSError):
                os.close(self.block_w)
            self.block_w = -1

    def _finished(self) -> bool:
        return self.status_buf.count(b"\n") >= 2

    def _take(self, name: str, chunk: bytes) -> None:
        if name == "status":
            if len(self.status_buf) < 4096:
                self.status_buf += chunk[: 4096 - len(self.status_buf)]
            return
        if name == "info":
            # bwrap's own report (trusted: written before the sandboxed code runs).
            if self.init_pid is not None or len(self.info_buf) > 4096:
                return
            self.info_buf += chunk[:4096]
            with contextlib.suppress(ValueError):
                pid = json.loads(bytes(self.info_buf)).get("child-pid")
                if isinstance(pid, int) and pid > 1:
                    self.init_pid = pid
                    self._place(pid)
            return
        room = self.limits.max_output_bytes - self.kept
        if room <= 0:
            self.truncated = True
            return  # keep draining so the algorithm never blocks on a full pipe
        part = chunk[:room]
        if len(part) < len(chunk):
            self.truncated = True
        self.kept += len(part)
        self.out[name] += part
        if self.on_output is not None:
            self.on_output(name, bytes(part))

    def close(self) -> None:
        self._unblock()
        for s in (self.proc.stdout, self.proc.stderr):
            if s is not None:
                s.close()
        for fd in (self.status_r, self.info_r):
            with contextlib.suppress(OSError):
                os.close(fd)

    def outcome(
        self, kind: str, limits: Limits, started_at: datetime, ended_at: datetime
    ) -> RunOutcome:
        status: dict[str, Any] = {}
        lines = bytes(self.status_buf).splitlines()
        started = bool(lines) and lines[0] == b"started"
        if len(lines) > 1:
            with contextlib.suppress(ValueError):
                parsed = json.loads(lines[1])
                if isinstance(parsed, dict):
                    status = parsed
        if self.placement_error is not None:
            # bwrap may have failed first (then the pid was gone): say what it said too.
            err = bytes(self.out["stderr"]).decode("utf-8", "replace").strip()
            raise SandboxUnavailableError(
                self.placement_error + (f"; bubblewrap: {err}" if err else "")
            )
        if not started and not self.timed_out:
            # The algorithm never started: bubblewrap or the launcher failed. What is on
            # stderr is theirs, not the algorithm's.
            err = bytes(self.out["stderr"]).decode("utf-8", "replace").strip()
            raise SandboxUnavailableError(
                f"the sandbox could not be set up (exit {self.proc.returncode}): {err}"
            )
        exit_code: int | None = None
        sig: int | None = None
        if self.killed:
            sig = int(signal.SIGKILL)
        elif isinstance(status.get("signal"), int):
            sig = int(status["signal"])
        elif isinstance(status.get("exit_code"), int):
            exit_code = int(status["exit_code"])
        else:
            rc = self.proc.returncode
            # bwrap reports a signal death of its child as 128 + signal.
            if rc < 0:
                sig = -rc
            elif rc > 128:
                sig = rc - 128
            else:
                exit_code = rc
        # The note comes from the algorithm's own process (the launcher's handler for
        # MemoryError, or the wasm runner's trap handler), so it can only explain a failure.
        note = str(status.get("note", "")) if (exit_code != 0 or sig is not None) else ""
        if note in ("epoch", "fuel") and kind != "wasm":
            note = ""
        if self.result_problem is None and not self.timed_out:
            self.result_problem = _results_problem(self.results, limits)
        timed_out = self.timed_out or note == "epoch"
        if self.cancelled:
            reason = "stopped: the runtime was stopped during the run"
        elif timed_out:
            reason = f"wall time limit ({limits.wall_seconds:g}s) exceeded"
        elif self.result_problem is not None:
            reason = self.result_problem
        elif note == "memory" or self.oom_kills:
            # rlimit (MemoryError in the algorithm) or the cgroup (the kernel's OOM kill).
            reason = f"memory limit {_mib(limits.memory_bytes)} exceeded"
        elif note == "fuel":
            reason = "wasm fuel exhausted"
        elif sig is not None:
            reason = _signal_reason(sig)
        elif exit_code != 0:
            reason = f"exit {exit_code}"
        else:
            reason = "ok"
        return RunOutcome(
            exit_code=exit_code,
            signal=sig,
            timed_out=timed_out,
            reason=reason,
            started_at=started_at,
            ended_at=ended_at,
            stdout=bytes(self.out["stdout"]),
            stderr=bytes(self.out["stderr"]),
            output_truncated=self.truncated,
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def _signal_reason(sig: int) -> str:
    if sig == signal.SIGXCPU:
        return "cpu time limit exceeded"
    if sig == signal.SIGXFSZ:
        return "file size limit exceeded"
    return f"killed by signal {sig}"


def _results_problem(results: Path, limits: Limits) -> str | None:
    """Walk /results without following links; name the first limit it exceeds."""
    total = 0
    count = 0
    stack = [(str(results), 0)]
    try:
        while stack:
            where, depth = stack.pop()
            with os.scandir(where) as it:
                for entry in it:
                    count += 1
                    if count > limits.max_result_files:
                        return (
                            f"result file count limit exceeded "
                            f"(more than {limits.max_result_files} entries)"
                        )
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        if depth + 1 >= MAX_TREE_DEPTH:
                            # Deeper than the archiver takes: stop the run now.
                            return (
                                f"result tree depth limit exceeded "
                                f"(more than {MAX_TREE_DEPTH} levels)"
                            )
                        stack.append((entry.path, depth + 1))
                    else:
                        total += st.st_size
                        if total > limits.max_result_bytes:
                            return "result size limit exceeded"
    except OSError as e:
        return f"results directory cannot be inspected: {e.strerror}"
    return None


# ---- building the sandbox -----------------------------------------------------------------


def _bwrap() -> str | None:
    for c in BWRAP_CANDIDATES:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def _wasmtime_dir() -> Path:
    spec = importlib.util.find_spec("wasmtime")
    if spec is None or not spec.submodule_search_locations:
        raise SandboxUnavailableError("the wasmtime package is not installed")
    return Path(os.path.realpath(next(iter(spec.submodule_search_locations))))


def _interpreter() -> tuple[str, str]:
    """The enclave's real interpreter binary and prefix (a venv resolves to its base)."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


def _algorithm_layout(
    kind: str, algorithm: Path, entrypoint: str | None
) -> tuple[str, str, str | None]:
    """Where the algorithm is mounted, the path to run inside, and the wasm export."""
    if kind == "probe":
        return "/algorithm/probe", "/algorithm/probe", None
    if algorithm.is_symlink() or not algorithm.exists():
        raise InvalidInputError(f"algorithm {algorithm} is missing or a symbolic link")
    if algorithm.is_file():
        if kind != "wasm" and entrypoint is not None:
            raise InvalidInputError(
                f"entrypoint {entrypoint!r} given, but the algorithm is a single file"
            )
        mount = f"/algorithm/{algorithm.name}"
        export = (entrypoint or "_start") if kind == "wasm" else None
        return mount, mount, export
    if not entrypoint:
        raise InvalidInputError("the algorithm is a directory but no entrypoint is given")
    rel = PurePosixPath(entrypoint)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise InvalidInputError(f"entrypoint {entrypoint!r} must be a relative path inside")
    real = os.path.realpath(algorithm / rel)
    if not real.startswith(os.path.realpath(algorithm) + os.sep) or not os.path.isfile(real):
        raise InvalidInputError(f"entrypoint {entrypoint!r} is not a file in the algorithm")
    return "/algorithm", f"/algorithm/{rel}", "_start" if kind == "wasm" else None


def _grant_read(path: Path, *, executable: bool) -> None:
    """Let the sandbox uid read ``path`` (other-read, other-search on directories)."""

    def fix(p: str, st: os.stat_result) -> None:
        mode = stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)
        if stat.S_ISDIR(st.st_mode):
            mode |= 0o055
        elif stat.S_ISREG(st.st_mode):
            mode |= 0o044
            if executable or mode & 0o100:
                mode |= 0o011
        else:
            return
        if mode != stat.S_IMODE(st.st_mode):
            os.chmod(p, mode, follow_symlinks=False)

    st = os.lstat(path)
    fix(str(path), st)
    if stat.S_ISDIR(st.st_mode):
        for root, dirs, files in os.walk(path):
            for n in dirs + files:
                p = os.path.join(root, n)
                fix(p, os.lstat(p))


def _rlimits(kind: str, limits: Limits) -> dict[str, tuple[int, int]]:
    inf = -1  # resource.RLIM_INFINITY on Linux
    cpu = math.ceil(limits.wall_seconds * limits.vcpus) + 1
    out = {
        "CORE": (0, 0),
        "CPU": (cpu, cpu + 1),
        # One byte over the limit, so a file that hit it is visibly over it afterwards.
        "FSIZE": (limits.max_result_bytes + 1, limits.max_result_bytes + 1),
        "NPROC": (limits.max_processes + SANDBOX_OWN_PROCESSES + NPROC_SLACK,) * 2,
        "NOFILE": (4096, 4096),
    }
    if kind == "wasm":
        # wasmtime reserves large PROT_NONE regions (guard pages), so RLIMIT_AS would
        # break it; RLIMIT_DATA counts committed private memory and is the backstop, the
        # store limit bounds the linear memory exactly.
        out["AS"] = (inf, inf)
        out["DATA"] = (limits.memory_bytes + WASM_RUNTIME_OVERHEAD,) * 2
    else:
        out["AS"] = (limits.memory_bytes, limits.memory_bytes)
        out["DATA"] = (limits.memory_bytes, limits.memory_bytes)
    return out


def _env(service: ServiceNet | None = None) -> list[str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": SANDBOX_TMP,
        "TMPDIR": SANDBOX_TMP,
        "LANG": "C.UTF-8",
        "SEALROOM_INPUTS": "/inputs",
        "SEALROOM_RESULTS": "/results",
    }
    if service is not None:
        # The spec's own variables first: the sandbox's names win (the spec refuses them).
        env = {**dict(service.env), **env, "PORT": str(service.port)}
        env["SEALROOM_EGRESS"] = json.dumps(
            {
                n: f"127.0.0.1:{p}"
                for n, p in zip(service.egress_names, service.egress_ports, strict=True)
            }
        )
        if service.proxy_port is not None:
            proxy = f"http://127.0.0.1:{service.proxy_port}"
            env["SEALROOM_EGRESS_PROXY"] = proxy
            env |= {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy}
            env |= {"http_proxy": proxy, "NO_PROXY": "127.0.0.1,localhost"}
    out = ["--clearenv"]
    for k, v in env.items():
        out += ["--setenv", k, v]
    return out


def _scratch(limits: Limits) -> list[str]:
    shm = min(limits.tmp_bytes, 8 * 2**20)
    return [
        "--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", SANDBOX_TMP,
        "--perms", "1777", "--size", str(shm), "--tmpfs", SANDBOX_SHM,
    ]  # fmt: skip


def _python_cmd(exe: str, stage2: bool) -> list[str]:
    # -I: isolated (no env vars, no user site, no script dir on sys.path); -S: no site
    # module, so no site-packages at all; -B: never write bytecode.
    return [exe, "-I", "-S", "-B", f"{SANDBOX_DIR}/launcher.py", *(["--stage2"] if stage2 else [])]


def _spec(
    kind: str,
    target: str,
    entry: str | None,
    args: Sequence[str],
    limits: Limits,
    as_root: bool,
    bwrap: str,
    status_fd: int,
    deadline: float,
    wheels: Sequence[str],
    host_uid: int,
    service: ServiceNet | None = None,
) -> dict[str, Any]:
    exe, _ = _interpreter()
    inner: list[str] | None = None
    if as_root:
        inner = [
            bwrap,
            "--unshare-user", "--disable-userns",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
            "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/", "/",
            "--dev-bind", "/dev", "/dev",
            "--bind", "/results", "/results",
            *(["--bind", BRIDGE_DIR, BRIDGE_DIR] if service is not None else []),
            *_scratch(limits),
            "--chdir", "/results",
            "--", *_python_cmd(exe, stage2=True),
        ]  # fmt: skip
    sys_path: list[str] = []
    if kind == "python":
        # The algorithm's own directory, then any pure-Python wheels at its top level
        # (zipimport reads them in place): that is how dependencies travel.
        sys_path = ["/algorithm", *(f"/algorithm/{w}" for w in wheels)]
        if service is not None and service.packages:
            sys_path.append(RUNTIME_SITE)
    return {
        "version": 1,
        "stage1": {
            "rlimits": _rlimits(kind, limits),
            "vcpus": limits.vcpus,
            "drop_to": [host_uid, host_uid] if as_root else None,
            "inner": inner,
        },
        "stage2": {
            "kind": kind,
            "target": target,
            "entry": entry,
            "args": list(args),
            "sys_path": sys_path,
            "status_fd": status_fd,
            "wasm": {
                "fuel": limits.wasm_fuel,
                "memory_bytes": limits.memory_bytes,
                "deadline_monotonic": deadline,
            },
            "bridge": None
            if service is None
            else {
                "ingress": f"{BRIDGE_DIR}/{INGRESS_SOCKET}",
                "port": service.port,
                "egress": [
                    {"port": p, "socket": f"{BRIDGE_DIR}/egress-{i}.sock"}
                    for i, p in enumerate(service.egress_ports)
                ]
                + (
                    []
                    if service.proxy_port is None
                    else [
                        {
                            "port": service.proxy_port,
                            "socket": f"{BRIDGE_DIR}/{EGRESS_PROXY_SOCKET}",
                        }
                    ]
                ),
            },
        },
    }


def _ancestor_dirs(path: str, have: set[str]) -> list[str]:
    """``--dir`` for each missing ancestor of ``path``, world-searchable (0755)."""
    out: list[str] = []
    parts = PurePosixPath(path).parts[1:-1]
    cur = ""
    for p in parts:
        cur += "/" + p
        if cur not in have:
            have.add(cur)
            out += ["--perms", "0755", "--dir", cur]
    return out


def _outer_args(
    as_root: bool,
    limits: Limits,
    algorithm: Path,
    algo_mount: str,
    inputs: Path,
    results: Path,
    spec_fd: int,
    wasm_lib: Path | None,
    service: ServiceNet | None = None,
) -> list[str]:
    exe, prefix = _interpreter()
    a: list[str] = [
        "--die-with-parent", "--new-session",
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
        "--unshare-cgroup-try", "--hostname", "sealroom",
        *_env(service),
    ]  # fmt: skip
    if as_root:
        # The launcher needs CAP_SETUID/CAP_SETGID once, to become SANDBOX_HOST_UID;
        # bwrap drops every other capability, including from the bounding set.
        a += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        a += [
            "--unshare-user", "--disable-userns",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
            "--cap-drop", "ALL",
        ]  # fmt: skip
    have: set[str] = {"/", "/usr"}
    a += ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            a += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            a += ["--ro-bind", d, d]
        have.add(d)
    if os.path.isfile("/etc/ld.so.cache"):
        a += [*_ancestor_dirs("/etc/ld.so.cache", have)]
        a += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    a += ["--proc", "/proc", "--dev", "/dev"]
    bound = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]

    def under_bound(p: str) -> bool:
        return any(p == b or p.startswith(b + "/") for b in bound)

    # The interpreter: its prefix (stdlib, lib-dynload, libpython), never its
    # site-packages: the algorithm brings its own pure-Python dependencies.
    for path in (prefix, os.path.dirname(exe)):
        if not under_bound(path):
            a += [*_ancestor_dirs(path + "/x", have), "--ro-bind", path, path]
            have.add(path)
            bound.append(path)
    for sp in site.getsitepackages([prefix]):
        real = os.path.realpath(sp)
        if os.path.isdir(real) and under_bound(real):
            a += ["--tmpfs", real, "--remount-ro", real]
    a += [*_ancestor_dirs(f"{SANDBOX_DIR}/x", have)]
    a += ["--ro-bind", str(LAUNCHER), f"{SANDBOX_DIR}/launcher.py"]
    a += ["--perms", "0444", "--ro-bind-data", str(spec_fd), f"{SANDBOX_DIR}/spec.json"]
    if wasm_lib is not None:
        a += ["--perms", "0755", "--dir", f"{SANDBOX_DIR}/lib"]
        a += ["--ro-bind", str(wasm_lib), f"{SANDBOX_DIR}/lib/wasmtime"]
    if algo_mount == "/algorithm":
        a += ["--ro-bind", str(algorithm), "/algorithm"]
    else:
        a += ["--perms", "0755", "--dir", "/algorithm", "--ro-bind", str(algorithm), algo_mount]
    a += ["--ro-bind", str(inputs), "/inputs", "--bind", str(results), "/results"]
    if service is not None:
        a += [
            *_ancestor_dirs(f"{BRIDGE_DIR}/x", have),
            "--bind",
            str(service.bridge_dir),
            BRIDGE_DIR,
        ]
    if service is not None and service.packages:
        a += [*_ancestor_dirs(f"{RUNTIME_SITE}/x", have)]
        for host, inside in _runtime_package_dirs(service.packages):
            a += ["--ro-bind", host, inside]
    if as_root:
        a += ["--perms", "0755", "--dir", SANDBOX_TMP]  # the inner sandbox's tmpfs goes here
    else:
        a += [*_scratch(limits), "--chdir", "/results"]
    a += ["--remount-ro", "/"]
    return a


__all__ = [
    "SANDBOX_HOST_UID",
    "Limits",
    "RunOutcome",
    "SandboxUnavailableError",
    "ServiceNet",
    "check_sandbox",
    "run_algorithm",
]
