"""The sandbox's seccomp filter: system calls no algorithm needs answer EPERM.

Design: docs/adr/0018-sandbox-cgroups-and-seccomp.md. The filter is built by libseccomp
(through pyseccomp, a ctypes binding API-compatible with libseccomp's own), exported as a
classic BPF program and handed to bubblewrap (``--seccomp FD``), which loads it as the
last step before it executes the sandbox's first program: everything that then runs in
the sandbox (stage 2 of the launcher, the algorithm, whatever it starts) is filtered.

- Default: allow. A deny-list, not an allow-list: algorithms are Python, wasm or any
  dynamically linked program, and what they need legitimately is open-ended; what they
  never need (kernel administration, debugging other processes, new kernel surfaces) is
  a short, stable list.
- Denied calls return EPERM, so an algorithm gets a clear error instead of a death.
  ``clone3`` returns ENOSYS instead: its flags sit in memory a filter cannot read, and
  ENOSYS makes the C library fall back to ``clone``, whose flags are checked.
- Architecture: only the native ABI (x86_64 here) is allowed. Calls through another ABI
  (i386 ``int 0x80``, x32 numbers) kill the process: libseccomp's bad-architecture
  action, and its x86_64 filter treats x32-numbered calls the same way.
"""

from __future__ import annotations

import errno
import functools
import os
from dataclasses import dataclass

# Kernel administration, tracing, new kernel surfaces: no algorithm needs any of these.
DENIED: tuple[str, ...] = (
    # another process's memory and execution
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # mounts and the root
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # namespaces
    "unshare", "setns",
    # kernel code, kernel objects, kernel tracing
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "fanotify_init", "lookup_dcookie",
    # keyrings
    "keyctl", "add_key", "request_key",
    # large, young attack surfaces
    "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
    # file handles bypass path-based confinement
    "open_by_handle_at", "name_to_handle_at",
    # the machine's state
    "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd",
    "clock_settime", "clock_adjtime", "settimeofday", "adjtimex",
    "syslog", "vhangup", "iopl", "ioperm", "uselib", "sysfs",
)  # fmt: skip

# Denied only where libseccomp and the kernel know them (newer than some hosts).
DENIED_WHERE_KNOWN = frozenset({"mount_setattr", "quotactl_fd", "pidfd_getfd"})

# personality(2) flags that weaken the process's memory layout or protections.
PERSONALITY_FLAGS = {
    "UNAME26": 0x0020000,
    "ADDR_NO_RANDOMIZE": 0x0040000,
    "FDPIC_FUNCPTRS": 0x0080000,
    "MMAP_PAGE_ZERO": 0x0100000,
    "ADDR_COMPAT_LAYOUT": 0x0200000,
    "READ_IMPLIES_EXEC": 0x0400000,
    "ADDR_LIMIT_32BIT": 0x0800000,
    "SHORT_INODE": 0x1000000,
    "WHOLE_SECONDS": 0x2000000,
    "STICKY_TIMEOUTS": 0x4000000,
    "ADDR_LIMIT_3GB": 0x8000000,
}

# clone(2) flags that make new namespaces (arg 0 on x86_64).
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWTIME": 0x00000080,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}


class SeccompUnavailableError(Exception):
    """libseccomp (or its binding) is missing or refused the filter; the message says."""


@dataclass(frozen=True)
class Filter:
    bpf: bytes  # classic BPF, struct sock_filter[] as bubblewrap's --seccomp reads it
    arch: str
    denied: tuple[str, ...]  # the system calls that answer EPERM on this architecture

    def memfd(self) -> int:
        """An anonymous file holding the program, at offset 0 (the caller closes it)."""
        fd = os.memfd_create("sealroom-seccomp")
        try:
            os.write(fd, self.bpf)
            os.lseek(fd, 0, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd


def build() -> Filter:
    """Build the filter for this machine's native architecture with libseccomp."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as e:  # OSError: the binding found no libseccomp.so
        raise SeccompUnavailableError(
            f"libseccomp is not usable ({e}): install the Debian package libseccomp2 "
            "and the Python package pyseccomp"
        ) from e
    try:
        arch = sc.system_arch()
        f = sc.SyscallFilter(sc.ALLOW)
        # Another ABI (i386 int 0x80, x32) ends the process rather than reaching calls
        # this filter never looked at.
        f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
        eperm = sc.ERRNO(errno.EPERM)
        denied = []
        for name in DENIED:
            if sc.resolve_syscall(arch, name) < 0:
                if name in DENIED_WHERE_KNOWN:
                    continue
                raise SeccompUnavailableError(f"libseccomp does not know system call {name}")
            f.add_rule(eperm, name)
            denied.append(name)
        for flag in CLONE_NAMESPACE_FLAGS.values():
            f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        for flag in PERSONALITY_FLAGS.values():
            f.add_rule(eperm, "personality", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        fd = os.memfd_create("sealroom-seccomp-export")
        try:
            with os.fdopen(fd, "w+b", closefd=False) as out:
                f.export_bpf(out)
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as e:
        raise SeccompUnavailableError(f"libseccomp refused the sandbox filter: {e}") from e
    bpf = b"".join(chunks)
    if not bpf or len(bpf) % 8:
        raise SeccompUnavailableError(f"libseccomp exported {len(bpf)} bytes, not a program")
    return Filter(bpf=bpf, arch=os.uname().machine, denied=tuple(denied))


@functools.cache
def sandbox_filter() -> Filter:
    """The filter (built once per process; the same for every run)."""
    return build()


__all__ = [
    "CLONE_NAMESPACE_FLAGS",
    "DENIED",
    "PERSONALITY_FLAGS",
    "Filter",
    "SeccompUnavailableError",
    "sandbox_filter",
]
