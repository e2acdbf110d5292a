"""One control group per sandbox, so limits hold for the sandbox as a whole.

Design: docs/adr/0018-sandbox-cgroups-and-seccomp.md. rlimits are per process (six
children of a 512 MiB sandbox could use six times that) and CPU affinity can be widened by
the algorithm itself; a cgroup bounds the total, whatever the algorithm forks:

- memory: ``memory.max`` (v2) / ``memory.limit_in_bytes`` (v1), swap off
  (``memory.swap.max`` 0 / ``memory.memsw.limit_in_bytes`` = the same limit), and on v2
  ``memory.oom.group`` so an out-of-memory kill takes the whole sandbox;
- processes: ``pids.max``;
- CPU: ``cpuset.cpus`` (``sched_setaffinity`` cannot leave a cpuset), or where no cpuset
  controller is available, a bandwidth quota (``cpu.max`` / ``cpu.cfs_quota_us``).

The host is detected, never assumed: cgroup v2 when the unified hierarchy offers the
controllers to this process's cgroup (``cgroup.controllers``), else v1 hierarchies
(``/proc/self/mountinfo`` + ``/proc/cgroups``). A sandbox cgroup is a child of this
process's own cgroup, so it stays inside whatever was delegated to the runtime.

Only the standard library; the runtime (sandbox.py) decides what to do when no cgroup can
be had (fail closed).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

log = logging.getLogger(__name__)

# The v2 leaf this process moves itself into when its own cgroup must hand controllers
# down ("no internal processes": a non-root v2 cgroup with members cannot enable them).
RUNTIME_LEAF = "sealroom-runtime"
SANDBOX_PREFIX = "sealroom-sandbox-"
CPU_PERIOD_US = 100_000
# Killing what is left in a cgroup and removing it: bounded, never forever.
DESTROY_ROUNDS = 200
DESTROY_PAUSE = 0.01

CpuMethod = Literal["cpuset", "cpu"]


class CgroupUnavailableError(Exception):
    """No cgroup with the needed controllers can be made here; the message says why."""


@dataclass(frozen=True)
class Mount:
    root: str  # the path inside the hierarchy that is mounted (usually "/")
    point: Path
    fstype: str
    super_options: frozenset[str]


@dataclass(frozen=True)
class CgroupHost:
    """Where sandbox cgroups are made: one parent directory per hierarchy used."""

    version: Literal[1, 2]
    # v2: {"": dir}; v1: controller name -> this process's directory in its hierarchy.
    parents: Mapping[str, Path]
    cpu: CpuMethod

    def describe(self) -> str:
        dirs = ", ".join(str(p) for p in self.parents.values())
        return f"cgroup v{self.version} ({self.cpu} for CPUs) under {dirs}"


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int
    max_pids: int
    cpus: tuple[int, ...]  # the CPUs the sandbox may use (cpuset), len = vCPUs


# ---- detection ---------------------------------------------------------------------------

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(s: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of a /proc/<pid>/mountinfo (proc(5) layout)."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        out.append(
            Mount(
                root=_unescape(fields[3]),
                point=Path(_unescape(fields[4])),
                fstype=rfields[0],
                super_options=frozenset(rfields[2].split(",")),
            )
        )
    return out


def parse_proc_cgroups(text: str) -> dict[str, bool]:
    """/proc/cgroups: v1 controller name -> enabled."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and not line.startswith("#"):
            out[parts[0]] = parts[3] == "1"
    return out


def parse_self_cgroup(text: str) -> tuple[str | None, dict[str, str]]:
    """/proc/self/cgroup: (the v2 path or None, v1 controller -> path)."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            v2 = path
        else:
            for c in controllers.split(","):
                if c:
                    v1[c] = path
    return v2, v1


def _own_dir(mount: Mount, path: str) -> Path | None:
    """This process's cgroup directory in ``mount`` (None if outside what is mounted)."""
    rel = PurePosixPath(path)
    root = PurePosixPath(mount.root)
    if rel != root and root not in rel.parents:
        return None
    return mount.point / rel.relative_to(root)


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def detect_from(mountinfo: str, proc_cgroups: str, self_cgroup: str) -> CgroupHost:
    """Decide v2 or v1 from the kernel's own files (contents given); raise if neither."""
    mounts = parse_mountinfo(mountinfo)
    v2_path, v1_paths = parse_self_cgroup(self_cgroup)
    problems: list[str] = []

    v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if v2 is None:
        problems.append("no cgroup2 mount")
    elif v2_path is None:
        problems.append("this process has no cgroup v2 path")
    else:
        own = _own_dir(v2, v2_path)
        if own is not None and own.name == RUNTIME_LEAF:
            own = own.parent  # moved there by an earlier sandbox (see _enable_v2)
        try:
            offered = set(_read(own / "cgroup.controllers").split()) if own else set()
        except OSError as e:
            offered = set()
            problems.append(f"cannot read {own}/cgroup.controllers: {e.strerror}")
        cpu = _cpu_method(offered)
        if own is not None and {"memory", "pids"} <= offered and cpu is not None:
            return CgroupHost(version=2, parents={"": own}, cpu=cpu)
        problems.append(
            f"cgroup v2 at {v2.point} offers controllers {sorted(offered) or 'none'}, "
            "need memory, pids and cpuset or cpu"
        )

    enabled = parse_proc_cgroups(proc_cgroups)
    v1_dirs: dict[str, Path] = {}
    for m in mounts:
        if m.fstype != "cgroup":
            continue
        for c in m.super_options:
            if enabled.get(c) and c in v1_paths and c not in v1_dirs:
                own = _own_dir(m, v1_paths[c])
                if own is not None:
                    v1_dirs[c] = own
    cpu = _cpu_method(set(v1_dirs))
    if {"memory", "pids"} <= set(v1_dirs) and cpu is not None:
        return CgroupHost(
            version=1, parents={c: v1_dirs[c] for c in ("memory", "pids", cpu)}, cpu=cpu
        )
    problems.append(
        f"cgroup v1 hierarchies mounted and enabled: {sorted(v1_dirs) or 'none'}, "
        "need memory, pids and cpuset or cpu"
    )
    raise CgroupUnavailableError("; ".join(problems))


def _cpu_method(controllers: Iterable[str]) -> CpuMethod | None:
    have = set(controllers)
    if "cpuset" in have:
        return "cpuset"
    if "cpu" in have:
        return "cpu"
    return None


_host_lock = threading.Lock()
_host: CgroupHost | None = None


def detect() -> CgroupHost:
    """This host's cgroup set-up (cached: the answer does not change while we run)."""
    global _host
    with _host_lock:
        if _host is None:
            try:
                _host = detect_from(
                    _read(Path("/proc/self/mountinfo")),
                    _read(Path("/proc/cgroups")),
                    _read(Path("/proc/self/cgroup")),
                )
            except OSError as e:
                raise CgroupUnavailableError(f"cannot read the cgroup set-up: {e}") from e
        return _host


# ---- one sandbox's cgroup ----------------------------------------------------------------


def _write(path: Path, value: str) -> None:
    # O_CREAT only matters for a test's fake tree: cgroupfs refuses to create files.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _has(d: Path, parent: Path, name: str) -> bool:
    """Whether a controller file exists (the parent shows it too, except at the root)."""
    return (d / name).exists() or (parent / name).exists()


@dataclass
class SandboxCgroup:
    """A cgroup (one directory per hierarchy) holding one sandbox; destroy() removes it."""

    host: CgroupHost
    limits: CgroupLimits
    dirs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, host: CgroupHost, limits: CgroupLimits) -> SandboxCgroup:
        """Make the cgroup and set every limit; on any failure nothing is left behind."""
        if limits.memory_bytes < 1 or limits.max_pids < 1 or not limits.cpus:
            raise ValueError(f"cgroup limits must be positive: {limits}")
        cg = cls(host, limits)
        name = SANDBOX_PREFIX + secrets.token_hex(8)
        try:
            if host.version == 2:
                cg._create_v2(name)
            else:
                cg._create_v1(name)
        except OSError as e:
            cg.destroy()
            raise CgroupUnavailableError(
                f"cannot set up the sandbox cgroup ({host.describe()}): "
                f"{e.strerror or e} ({e.filename})"
            ) from e
        return cg

    def _create_v2(self, name: str) -> None:
        parent = self.host.parents[""]
        wanted = ["memory", "pids", self.host.cpu]
        _enable_v2(parent, wanted)
        d = parent / name
        os.mkdir(d, 0o755)
        self.dirs[""] = d
        lim = self.limits
        _write(d / "memory.max", str(lim.memory_bytes))
        if _has(d, parent, "memory.swap.max"):
            _write(d / "memory.swap.max", "0")
        if _has(d, parent, "memory.oom.group"):
            # One OOM kill ends the whole sandbox, not only its largest process.
            _write(d / "memory.oom.group", "1")
        _write(d / "pids.max", str(lim.max_pids))
        if self.host.cpu == "cpuset":
            _write(d / "cpuset.cpus", _cpu_list(lim.cpus))
            mems = _first_line(parent / "cpuset.mems.effective")
            if mems:
                _write(d / "cpuset.mems", mems)
        else:
            _write(d / "cpu.max", f"{len(lim.cpus) * CPU_PERIOD_US} {CPU_PERIOD_US}")

    def _create_v1(self, name: str) -> None:
        lim = self.limits
        for controller, parent in self.host.parents.items():
            d = parent / name
            os.mkdir(d, 0o755)
            self.dirs[controller] = d
            if controller == "memory":
                _write(d / "memory.limit_in_bytes", str(lim.memory_bytes))
                # memsw = memory + swap; the same number means no swap at all.
                if _has(d, parent, "memory.memsw.limit_in_bytes"):
                    _write(d / "memory.memsw.limit_in_bytes", str(lim.memory_bytes))
            elif controller == "pids":
                _write(d / "pids.max", str(lim.max_pids))
            elif controller == "cpuset":
                # A v1 cpuset starts empty and takes no task until both are set.
                mems = _first_line(parent / "cpuset.effective_mems") or _first_line(
                    parent / "cpuset.mems"
                )
                _write(d / "cpuset.mems", mems)
                _write(d / "cpuset.cpus", _cpu_list(lim.cpus))
            elif controller == "cpu":
                _write(d / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(d / "cpu.cfs_quota_us", str(len(lim.cpus) * CPU_PERIOD_US))

    def add(self, pid: int) -> None:
        """Move ``pid`` (the whole process) into the cgroup in every hierarchy."""
        for d in self.dirs.values():
            _write(d / "cgroup.procs", str(pid))

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                out.update(int(p) for p in _read(d / "cgroup.procs").split())
        return out

    def oom_kills(self) -> int:
        """How many processes the kernel killed for the memory limit (0 if unknown)."""
        if self.host.version == 2:
            name = "memory.events"
            d = self.dirs.get("")
        else:
            name = "memory.oom_control"  # has an oom_kill line since Linux 4.13
            d = self.dirs.get("memory")
        if d is None:
            return 0
        try:
            text = _read(d / name)
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def destroy(self) -> bool:
        """Kill whatever is still inside, then remove the cgroup. Never raises.

        Returns True when every directory is gone (a leftover is logged).
        """
        kill_file = self.dirs.get("", Path("/nonexistent")) / "cgroup.kill"
        for _ in range(DESTROY_ROUNDS):
            if not self.dirs:
                return True
            if kill_file.exists():
                with contextlib.suppress(OSError):
                    _write(kill_file, "1")
            for pid in self.pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            for key, d in list(self.dirs.items()):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                        log.warning("cannot remove sandbox cgroup %s: %s", d, e.strerror)
                        del self.dirs[key]
                    continue
                del self.dirs[key]
            if self.dirs:
                time.sleep(DESTROY_PAUSE)
        log.warning("sandbox cgroup left behind: %s", ", ".join(map(str, self.dirs.values())))
        return False


def _enable_v2(parent: Path, controllers: list[str]) -> None:
    """Let ``parent``'s children use ``controllers`` (cgroup.subtree_control).

    A non-root v2 cgroup that has member processes cannot hand controllers down, so when
    the write is refused with EBUSY this process moves itself into a leaf beside the
    sandboxes (what systemd's Delegate= documentation asks of a delegated service) and
    tries again. Another process in ``parent`` still makes it fail: that is reported.
    """
    have = set(_read(parent / "cgroup.subtree_control").split())
    missing = [c for c in controllers if c not in have]
    if not missing:
        return
    line = " ".join("+" + c for c in missing)
    try:
        _write(parent / "cgroup.subtree_control", line)
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        leaf = parent / RUNTIME_LEAF
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf, 0o755)
        _write(leaf / "cgroup.procs", str(os.getpid()))
        _write(parent / "cgroup.subtree_control", line)


def _cpu_list(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(set(cpus)))


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list ("0-3,8") as a set."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _first_line(path: Path) -> str:
    try:
        return _read(path).strip()
    except OSError:
        return ""


__all__ = [
    "CgroupHost",
    "CgroupLimits",
    "CgroupUnavailableError",
    "SandboxCgroup",
    "detect",
    "detect_from",
    "parse_cpu_list",
]
