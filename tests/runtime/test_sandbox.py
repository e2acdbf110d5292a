"""The algorithm sandbox, with real bubblewrap and real processes.

Hostile algorithms are named after what they try; each must be contained and the way it
ended must show in RunOutcome. Limits stay small so the suite is safe on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyseccomp
import pytest

from sealroom.errors import InvalidInputError
from sealroom.runtime import cgroups, sandbox, seccomp
from sealroom.runtime.sandbox import (
    Limits,
    RunOutcome,
    SandboxUnavailableError,
    check_sandbox,
    run_algorithm,
)

FAST = Limits(wall_seconds=20, memory_bytes=256 * 2**20, max_processes=16)


@pytest.fixture(scope="module", autouse=True)
def _bwrap_present() -> None:
    if sandbox._bwrap() is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    check_sandbox()  # installed but not working is a failure, not a skip


@dataclass
class Box:
    root: Path
    inputs: Path
    results: Path

    def run(
        self,
        code: str,
        limits: Limits = FAST,
        args: tuple[str, ...] = (),
        on_output: object = None,
    ) -> RunOutcome:
        alg = self.root / "alg.py"
        alg.write_text(textwrap.dedent(code))
        return run_algorithm(
            "python",
            alg,
            entrypoint=None,
            args=args,
            inputs=self.inputs,
            results=self.results,
            limits=limits,
            on_output=on_output,  # type: ignore[arg-type]
        )

    def run_file(
        self,
        kind: sandbox.AlgorithmKind,
        path: Path,
        limits: Limits = FAST,
        entrypoint: str | None = None,
        args: tuple[str, ...] = (),
    ) -> RunOutcome:
        return run_algorithm(
            kind,
            path,
            entrypoint=entrypoint,
            args=args,
            inputs=self.inputs,
            results=self.results,
            limits=limits,
        )


@pytest.fixture
def box(tmp_path: Path) -> Box:
    inputs = tmp_path / "inputs"
    results = tmp_path / "results"
    inputs.mkdir()
    results.mkdir()
    (inputs / "numbers.txt").write_text("1\n2\n3\n")
    (inputs / "ds2").mkdir()
    (inputs / "ds2" / "more.txt").write_text("4\n")
    return Box(tmp_path, inputs, results)


# What this test process's runs leased and made (other runtimes on the machine, such as
# another test suite, use the same uid range and cgroup parents at the same time).
_LEASED_UIDS: set[int] = set()
_MADE_CGROUPS: list[Path] = []


@pytest.fixture(autouse=True)
def _track_leases_and_cgroups(monkeypatch: pytest.MonkeyPatch) -> None:
    lease_enter = sandbox._UidLease.__enter__
    create = cgroups.SandboxCgroup.create.__func__  # type: ignore[attr-defined]

    def leased(self: sandbox._UidLease) -> int:
        uid = lease_enter(self)
        _LEASED_UIDS.add(uid)
        return uid

    def created(
        cls: type[cgroups.SandboxCgroup], host: cgroups.CgroupHost, lim: cgroups.CgroupLimits
    ) -> cgroups.SandboxCgroup:
        cg: cgroups.SandboxCgroup = create(cls, host, lim)
        _MADE_CGROUPS.extend(cg.dirs.values())
        return cg

    monkeypatch.setattr(sandbox._UidLease, "__enter__", leased)
    monkeypatch.setattr(cgroups.SandboxCgroup, "create", classmethod(created))


def _sandbox_processes() -> list[int]:
    """Host processes running as a uid our runs leased (none may outlive a run)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        if uid in _LEASED_UIDS:
                            out.append(int(entry))
                        break
        except OSError:
            continue
    return out


def _cgroups_left() -> list[str]:
    """Cgroups our runs made that are still there (none may outlive a run)."""
    return sorted(str(d) for d in _MADE_CGROUPS if d.exists())


# ---- an honest algorithm ---------------------------------------------------------------


def test_python_reads_inputs_writes_results(box: Box) -> None:
    seen: list[tuple[str, bytes]] = []
    out = box.run(
        """
        import os, sys
        total = sum(int(x) for x in open("/inputs/numbers.txt"))
        total += sum(int(x) for x in open("/inputs/ds2/more.txt"))
        os.makedirs("/results/sub")
        with open("/results/sub/sum.txt", "w") as f:
            f.write(str(total))
        open("relative.txt", "w").write("cwd is /results")
        print("args", sys.argv[1:], "uid", os.getuid())
        print("warn", file=sys.stderr)
        """,
        args=("--x", "1"),
        on_output=lambda s, c: seen.append((s, c)),
    )
    assert out.ok, (out.reason, out.stderr)
    assert out.reason == "ok" and out.exit_code == 0 and out.signal is None
    assert (box.results / "sub" / "sum.txt").read_text() == "10"
    assert (box.results / "relative.txt").read_text() == "cwd is /results"
    assert b"args ['--x', '1'] uid 65534" in out.stdout
    assert out.stderr == b"warn\n"
    assert b"".join(c for s, c in seen if s == "stdout") == out.stdout
    assert out.started_at <= out.ended_at


def test_python_package_directory_with_entrypoint_and_wheel(box: Box, tmp_path: Path) -> None:
    import zipfile

    pkg = tmp_path / "pkg"
    (pkg / "app").mkdir(parents=True)
    (pkg / "app" / "__init__.py").write_text("")
    (pkg / "app" / "main.py").write_text(
        "import helper_lib, helper_dep\n"
        "open('/results/out.txt', 'w').write(helper_lib.VALUE + helper_dep.VALUE)\n"
    )
    (pkg / "helper_lib.py").write_text("VALUE = 'lib;'\n")
    with zipfile.ZipFile(pkg / "helper_dep-1.0-py3-none-any.whl", "w") as z:
        z.writestr("helper_dep/__init__.py", "VALUE = 'wheel'\n")
    out = box.run_file("python", pkg, entrypoint="app/main.py")
    assert out.ok, (out.reason, out.stderr)
    assert (box.results / "out.txt").read_text() == "lib;wheel"


def test_python_has_no_third_party_packages(box: Box) -> None:
    out = box.run(
        """
        import sys
        for name in ("pytest", "cryptography", "sealroom", "wasmtime", "pip"):
            try:
                __import__(name)
            except ImportError:
                continue
            print("importable:", name)
        print("path", sys.path)
        """
    )
    assert out.ok, out.stderr
    assert b"importable" not in out.stdout
    assert b"site-packages" not in out.stdout


def test_output_bounded_and_truncated(box: Box) -> None:
    seen: list[bytes] = []
    limits = Limits(wall_seconds=20, max_output_bytes=1000)
    out = box.run(
        "import sys\nfor _ in range(2000): sys.stdout.write('x' * 99 + '\\n')\n",
        limits=limits,
        on_output=lambda s, c: seen.append(c),
    )
    assert out.ok
    assert out.output_truncated
    assert len(out.stdout) + len(out.stderr) == 1000
    assert sum(map(len, seen)) == 1000


def test_vcpus_limit_pins_cpus(box: Box) -> None:
    out = box.run("import os\nprint(len(os.sched_getaffinity(0)))\n", limits=Limits(vcpus=1))
    assert out.ok and out.stdout == b"1\n"


def test_nonzero_exit_reported(box: Box) -> None:
    out = box.run("raise SystemExit(7)")
    assert not out.ok and out.exit_code == 7 and out.reason == "exit 7"


def test_uncaught_exception_reported(box: Box) -> None:
    out = box.run("raise RuntimeError('boom')")
    assert out.exit_code == 1 and out.reason == "exit 1"
    assert b"RuntimeError: boom" in out.stderr


def test_forged_memory_note_on_success_ignored(box: Box) -> None:
    out = box.run(
        "import os\nfor fd in range(3, 64):\n    try: os.write(fd, b'memory')\n"
        "    except OSError: pass\n"
    )
    assert out.ok and out.reason == "ok"


def test_killed_by_signal_reported(box: Box) -> None:
    out = box.run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert out.signal == 11 and out.exit_code is None
    assert out.reason == "killed by signal 11"


# ---- hostile algorithms ----------------------------------------------------------------


def test_network_socket_to_host_loopback_is_refused(box: Box) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        out = box.run(
            f"""
            import socket
            for addr in (("127.0.0.1", {port}), ("10.255.255.1", 80)):
                try:
                    socket.create_connection(addr, timeout=2).close()
                    print("CONNECTED", addr)
                except OSError as e:
                    print("refused", addr, e.errno)
            """
        )
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever reached the host's listener
    finally:
        listener.close()
    assert out.ok, out.stderr
    assert b"CONNECTED" not in out.stdout
    assert out.stdout.count(b"refused") == 2


def test_reading_host_files_outside_inputs_fails(box: Box, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    home = Path.home()
    out = box.run(
        f"""
        import os
        for p in ({str(secret)!r}, "/etc/shadow", "/etc/passwd", "/work", "/root/.ssh",
                  "/sys/class", {str(Path(__file__).resolve())!r}):
            try:
                if os.path.isdir(p):
                    print("LISTED", p, os.listdir(p))
                else:
                    print("READ", p, open(p).read()[:20])
            except OSError as e:
                print("denied", p, type(e).__name__)
        print("HOME", sorted(os.listdir({str(home)!r})) if os.path.isdir({str(home)!r}) else [])
        """
    )
    assert out.ok, out.stderr
    assert b"TOP SECRET" not in out.stdout
    assert b"READ" not in out.stdout and b"LISTED" not in out.stdout
    # The host home directory is at most the path to the interpreter, nothing else.
    prefix = Path(os.path.realpath(sys.base_prefix))
    allowed = []
    if prefix.is_relative_to(home):
        allowed = [prefix.relative_to(home).parts[0]]
    assert f"HOME {allowed}".encode() in out.stdout


def test_writing_outside_results_fails(box: Box, tmp_path: Path) -> None:
    before = sorted(p.name for p in box.inputs.rglob("*"))
    outside = tmp_path / "escaped.txt"
    out = box.run(
        f"""
        import os
        for p in ("/inputs/evil.txt", "/inputs/numbers.txt", "/algorithm/evil.py",
                  "/evil.txt", "/usr/evil.txt", "/opt/sealroom/launcher.py",
                  {str(outside)!r}, "/proc/sys/kernel/hostname"):
            try:
                with open(p, "w") as f:
                    f.write("pwned")
                print("WROTE", p)
            except OSError as e:
                print("denied", p, type(e).__name__)
        open("/tmp/scratch.txt", "w").write("scratch is fine")
        """
    )
    assert out.ok, out.stderr
    assert b"WROTE" not in out.stdout
    assert not outside.exists()
    assert sorted(p.name for p in box.inputs.rglob("*")) == before
    assert (box.inputs / "numbers.txt").read_text() == "1\n2\n3\n"
    assert "pwned" not in (Path(sandbox.__file__).with_name("_launcher.py")).read_text()


def test_cannot_reach_other_sandbox_processes_fds(box: Box) -> None:
    """The launcher's status pipe and bwrap's descriptors are out of reach through /proc.

    The launcher is not dumpable; the inner bwrap's monitor has the algorithm's host uid
    but lives in the parent user namespace, which the kernel does not let a process in a
    child namespace ptrace or inspect; init and the outer bwrap are root."""
    out = box.run(
        """
        import os
        me = str(os.getpid())
        mine = {os.readlink(f"/proc/self/fd/{n}") for n in (0, 1, 2)}
        opened = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == me:
                continue
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    os.close(os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY))
                except OSError:
                    continue
                if target not in mine:  # its own stdio, shared with bwrap's init
                    opened.append((pid, fd, target))
        print("OPENED", opened) if opened else print("none")
        """
    )
    assert out.ok, out.stderr
    assert out.stdout == b"none\n"


def test_fork_bomb_is_contained(box: Box) -> None:
    limits = Limits(wall_seconds=20, memory_bytes=128 * 2**20, max_processes=8)
    out = box.run(
        """
        import os, sys, time
        forked = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(600)   # children hold their process slot
                    os._exit(0)
                forked += 1
                if forked > 200:
                    break
        finally:
            print("forked", forked, flush=True)
        """,
        limits=limits,
    )
    assert not out.ok
    assert out.reason == "exit 1"
    assert b"BlockingIOError" in out.stderr or b"Resource temporarily unavailable" in out.stderr
    forked = int(out.stdout.split()[1])
    assert forked <= limits.max_processes  # pids.max (RLIMIT_NPROC alone would allow more)
    assert _sandbox_processes() == []  # the sleeping children died with the sandbox
    assert _cgroups_left() == []


# ---- limits for the whole sandbox (one cgroup per run) --------------------------------

SIX_CHILDREN_EACH_100_MIB = """
import os, time
r, w = os.pipe()
children = []
for _ in range(6):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        blob = b"x" * (100 * 2**20)   # written, so every page is really used
        os.write(w, b"+")
        time.sleep(30)
        os._exit(0)
    children.append(pid)
os.close(w)
os.set_blocking(r, False)
held = 0
while held < 6:
    try:
        held += len(os.read(r, 6))
    except BlockingIOError:
        pass
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid:
        print("a child ended:", "signal", os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
              "after", held, "held", flush=True)
        break
    time.sleep(0.02)
else:
    print("ALL SIX HELD 600 MiB", flush=True)
"""


def test_memory_limit_holds_for_whole_sandbox_not_per_process(box: Box) -> None:
    """Six children of a 256 MiB sandbox each take 100 MiB: each is under the per-process
    rlimit, the total is not. The cgroup ends it, with a reason a person can read."""
    limits = Limits(wall_seconds=60, memory_bytes=256 * 2**20, max_processes=16)
    out = box.run(SIX_CHILDREN_EACH_100_MIB, limits=limits)
    assert b"ALL SIX HELD" not in out.stdout, out.stdout
    assert b"a child ended: signal 9" in out.stdout, (out.stdout, out.stderr[-500:])
    assert not out.ok
    assert out.reason == "memory limit 256 MiB exceeded"
    assert _sandbox_processes() == []
    assert _cgroups_left() == []


def test_algorithm_cannot_widen_cpu_affinity(box: Box) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a runtime allowed on at least two CPUs")
    out = box.run(
        """
        import os
        try:
            os.sched_setaffinity(0, range(os.cpu_count()))
        except OSError as e:
            print("refused", e.errno)
        print(sorted(os.sched_getaffinity(0)))
        status = open("/proc/self/status").read()
        print([l.split()[1] for l in status.splitlines() if l.startswith("Cpus_allowed_list")][0])
        """,
        limits=Limits(wall_seconds=20, memory_bytes=128 * 2**20, vcpus=1),
    )
    assert out.ok, out.stderr
    lines = out.stdout.decode().splitlines()
    assert len(json.loads(lines[-2])) == 1, lines
    assert len(cgroups.parse_cpu_list(lines[-1])) == 1, lines


@pytest.fixture
def no_cgroup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A host whose cgroup hierarchy cannot take a sandbox (the directory is absent)."""
    monkeypatch.delenv(sandbox.UNSAFE_NO_CGROUP_ENV, raising=False)
    absent = cgroups.CgroupHost(version=2, parents={"": tmp_path / "absent"}, cpu="cpuset")
    monkeypatch.setattr(cgroups, "_host", absent)


def test_no_cgroup_means_no_run(no_cgroup: None, box: Box) -> None:
    with pytest.raises(SandboxUnavailableError, match="limits could not hold for the whole"):
        box.run("open('/results/ran', 'w')")
    assert not (box.results / "ran").exists()


def test_no_cgroup_runs_only_when_explicitly_told(
    no_cgroup: None, box: Box, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(sandbox.UNSAFE_NO_CGROUP_ENV, "1")
    out = box.run("open('/results/ran', 'w')")
    assert out.ok, out.stderr
    assert (box.results / "ran").exists()
    assert "WITHOUT a cgroup" in caplog.text


def test_sandbox_not_run_when_it_cannot_enter_its_cgroup(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel refuses the move (a v1 cpuset without CPUs takes no task): the sandbox
    must die before the algorithm starts, not run outside its cgroup."""
    if cgroups.detect().parents.keys() != {"memory", "pids", "cpuset"}:
        pytest.skip("needs the v1 cpuset hierarchy to make the kernel refuse the move")
    create = cgroups.SandboxCgroup.create

    def without_cpus(host: cgroups.CgroupHost, lim: cgroups.CgroupLimits) -> cgroups.SandboxCgroup:
        cg = create(host, lim)
        (cg.dirs["cpuset"] / "cpuset.cpus").write_text("\n")
        return cg

    monkeypatch.setattr(cgroups.SandboxCgroup, "create", without_cpus)
    with pytest.raises(SandboxUnavailableError, match="cannot move the sandbox into its cgroup"):
        box.run("open('/results/ran', 'w')")
    assert not (box.results / "ran").exists()
    assert _sandbox_processes() == []
    assert _cgroups_left() == []


def test_cgroup_removed_after_every_run(box: Box) -> None:
    out = box.run("import os\nfor _ in range(3):\n    os.fork() or __import__('time').sleep(600)\n")
    assert out.ok
    assert _cgroups_left() == []


def test_unbounded_fork_loop_stopped_by_wall_limit(box: Box) -> None:
    limits = Limits(wall_seconds=2, memory_bytes=128 * 2**20, max_processes=6)
    out = box.run(
        """
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
        """,
        limits=limits,
    )
    assert out.timed_out and not out.ok
    assert out.reason == "wall time limit (2s) exceeded"
    assert _sandbox_processes() == []


def test_memory_past_the_limit(box: Box) -> None:
    out = box.run(
        "blob = bytearray(512 * 2**20)\nprint('ALLOCATED')\n",
        limits=Limits(wall_seconds=20, memory_bytes=128 * 2**20),
    )
    assert not out.ok
    assert out.reason == "memory limit 128 MiB exceeded"
    assert b"ALLOCATED" not in out.stdout


def test_memory_growing_in_steps(box: Box) -> None:
    out = box.run(
        "chunks = []\nwhile True:\n    chunks.append(b'x' * (8 * 2**20))\n",
        limits=Limits(wall_seconds=20, memory_bytes=128 * 2**20),
    )
    assert not out.ok
    assert out.reason == "memory limit 128 MiB exceeded"


def test_time_limit(box: Box) -> None:
    out = box.run("import time\ntime.sleep(60)\n", limits=Limits(wall_seconds=2))
    assert out.timed_out and not out.ok
    assert out.reason == "wall time limit (2s) exceeded"
    assert out.signal == 9
    assert _sandbox_processes() == []


def test_result_file_larger_than_limit(box: Box) -> None:
    out = box.run(
        """
        with open("/results/big.bin", "wb") as f:
            for _ in range(5):
                f.write(b"\\0" * 2**20)
        """,
        limits=Limits(wall_seconds=20, max_result_bytes=2**20),
    )
    assert not out.ok
    assert out.reason == "result size limit exceeded"
    assert (box.results / "big.bin").stat().st_size <= 2**20 + 1


def test_results_many_files_over_total_limit(box: Box) -> None:
    out = box.run(
        """
        for i in range(8):
            open(f"/results/part{i}.bin", "wb").write(b"\\0" * 200_000)
        """,
        limits=Limits(wall_seconds=20, max_result_bytes=2**20),
    )
    assert not out.ok and out.reason == "result size limit exceeded"


def test_results_too_many_entries(box: Box) -> None:
    out = box.run(
        "for i in range(300):\n    open(f'/results/f{i}', 'w').close()\n",
        limits=Limits(wall_seconds=20, max_result_files=100),
    )
    assert not out.ok
    assert out.reason.startswith("result file count limit exceeded")


def test_tmp_is_size_limited(box: Box) -> None:
    out = box.run(
        """
        try:
            with open("/tmp/fill", "wb") as f:
                for _ in range(64):
                    f.write(b"\\0" * 2**20)
        except OSError as e:
            print("full", e.errno)
        """,
        limits=Limits(wall_seconds=20, tmp_bytes=4 * 2**20),
    )
    assert out.ok, out.stderr
    assert b"full 28" in out.stdout  # ENOSPC


def test_no_capabilities_no_user_namespaces(box: Box) -> None:
    out = box.run(
        """
        import os, subprocess
        status = open("/proc/self/status").read()
        for key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs"):
            print(key, [l.split()[1] for l in status.splitlines() if l.startswith(key)][0])
        r = subprocess.run(["/usr/bin/unshare", "--user", "true"], capture_output=True)
        print("unshare", r.returncode)
        """
    )
    assert out.ok, out.stderr
    assert b"CapEff 0000000000000000" in out.stdout
    assert b"CapPrm 0000000000000000" in out.stdout
    assert b"CapBnd 0000000000000000" in out.stdout
    assert b"NoNewPrivs 1" in out.stdout
    if shutil.which("unshare"):
        assert b"unshare 0" not in out.stdout


# ---- wasm ------------------------------------------------------------------------------

WASM_COPY = r"""
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "numbers.txt")
  (data (i32.const 16) "copy.txt")
  (data (i32.const 32) "wasm done\n")
  (func (export "_start")
    (local $fd i32) (local $n i32)
    ;; open /inputs/numbers.txt (preopen fd 3), read into 1024
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 11)
                         (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0)
                         (i32.const 100))
      (then (call $proc_exit (i32.const 10))))
    (local.set $fd (i32.load (i32.const 100)))
    (i32.store (i32.const 200) (i32.const 1024))
    (i32.store (i32.const 204) (i32.const 512))
    (if (call $fd_read (local.get $fd) (i32.const 200) (i32.const 1) (i32.const 208))
      (then (call $proc_exit (i32.const 11))))
    (local.set $n (i32.load (i32.const 208)))
    ;; create /results/copy.txt (preopen fd 4), O_CREAT|O_TRUNC, write what was read
    (if (call $path_open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 8)
                         (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0)
                         (i32.const 100))
      (then (call $proc_exit (i32.const 12))))
    (i32.store (i32.const 204) (local.get $n))
    (if (call $fd_write (i32.load (i32.const 100)) (i32.const 200) (i32.const 1)
                        (i32.const 208))
      (then (call $proc_exit (i32.const 13))))
    ;; say so on stdout
    (i32.store (i32.const 200) (i32.const 32))
    (i32.store (i32.const 204) (i32.const 10))
    (drop (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 208))))
)
"""

WASM_WRITE_INPUT = r"""
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "evil.txt")
  (data (i32.const 16) "../escape.txt")
  (func (export "_start")
    ;; creating a file in read-only /inputs must fail
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 8)
                         (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0)
                         (i32.const 100)))
      (then (call $proc_exit (i32.const 20))))
    ;; escaping /results with .. must fail
    (if (i32.eqz (call $path_open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 13)
                         (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0)
                         (i32.const 100)))
      (then (call $proc_exit (i32.const 21))))
    (call $proc_exit (i32.const 0)))
)
"""

WASM_LOOP = '(module (func (export "_start") (loop $l (br $l))))'

WASM_GROW = r"""
(module
  (memory 1)
  (func (export "_start")
    (loop $l
      (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))
"""


def _wasm(tmp_path: Path, wat: str, name: str = "module.wasm") -> Path:
    import wasmtime

    p = tmp_path / name
    p.write_bytes(wasmtime.wat2wasm(wat))
    return p


def test_wasm_reads_input_and_writes_result(box: Box, tmp_path: Path) -> None:
    out = box.run_file("wasm", _wasm(tmp_path, WASM_COPY))
    assert out.ok, (out.reason, out.stderr)
    assert (box.results / "copy.txt").read_text() == "1\n2\n3\n"
    assert out.stdout == b"wasm done\n"


def test_wasm_cannot_write_inputs_or_escape_results(box: Box, tmp_path: Path) -> None:
    out = box.run_file("wasm", _wasm(tmp_path, WASM_WRITE_INPUT))
    assert out.ok, (out.reason, out.exit_code, out.stderr)
    assert not (box.inputs / "evil.txt").exists()
    assert not (box.root / "escape.txt").exists()


def test_wasm_exit_code(box: Box, tmp_path: Path) -> None:
    wat = (
        '(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32)))'
        ' (memory (export "memory") 1) (func (export "_start") (call $e (i32.const 3))))'
    )
    out = box.run_file("wasm", _wasm(tmp_path, wat))
    assert out.exit_code == 3 and out.reason == "exit 3"


def test_wasm_infinite_loop_stopped_by_fuel(box: Box, tmp_path: Path) -> None:
    out = box.run_file(
        "wasm", _wasm(tmp_path, WASM_LOOP), limits=Limits(wall_seconds=20, wasm_fuel=10**6)
    )
    assert not out.ok and not out.timed_out
    assert out.reason == "wasm fuel exhausted"


def test_wasm_infinite_loop_stopped_by_epoch_deadline(box: Box, tmp_path: Path) -> None:
    out = box.run_file("wasm", _wasm(tmp_path, WASM_LOOP), limits=Limits(wall_seconds=2))
    assert out.timed_out and not out.ok
    assert out.reason == "wall time limit (2s) exceeded"
    # The runner interrupted the module itself (a clean exit), before any hard kill.
    assert out.signal is None and out.exit_code == 1
    assert b"wasm trap" in out.stderr


def test_wasm_memory_limited_by_store(box: Box, tmp_path: Path) -> None:
    out = box.run_file(
        "wasm", _wasm(tmp_path, WASM_GROW), limits=Limits(wall_seconds=20, memory_bytes=2**24)
    )
    # memory.grow fails at the store limit; the module then traps on `unreachable`.
    assert not out.ok and out.exit_code == 1
    assert b"unreachable" in out.stderr


def test_wasm_module_in_a_directory(box: Box, tmp_path: Path) -> None:
    pkg = tmp_path / "wasm-pkg"
    (pkg / "bin").mkdir(parents=True)
    _wasm(pkg / "bin", WASM_COPY, "copy.wasm")
    out = box.run_file("wasm", pkg, entrypoint="bin/copy.wasm")
    assert out.ok, (out.reason, out.stderr)
    assert (box.results / "copy.txt").read_text() == "1\n2\n3\n"


def test_wasm_export_choice_and_missing_export(box: Box, tmp_path: Path) -> None:
    out = box.run_file(
        "wasm", _wasm(tmp_path, WASM_LOOP), entrypoint="main", limits=Limits(wall_seconds=20)
    )
    assert out.exit_code == 1 and b"exports no function 'main'" in out.stderr


# ---- binaries --------------------------------------------------------------------------


def test_shell_script_binary(box: Box, tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text('#!/bin/sh\nwc -l < /inputs/numbers.txt > /results/lines.txt\necho "$1"\n')
    script.chmod(0o700)
    out = box.run_file("binary", script, args=("hello",))
    assert out.ok, (out.reason, out.stderr)
    assert (box.results / "lines.txt").read_text().strip() == "3"
    assert out.stdout == b"hello\n"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_compiled_c_binary(box: Box, tmp_path: Path) -> None:
    src = tmp_path / "prog.c"
    src.write_text(
        textwrap.dedent(
            """
            #include <stdio.h>
            #include <stdlib.h>
            int main(void) {
                FILE *in = fopen("/inputs/numbers.txt", "r");
                FILE *out = fopen("/results/sum.txt", "w");
                int x, s = 0;
                if (!in || !out) return 2;
                while (fscanf(in, "%d", &x) == 1) s += x;
                fprintf(out, "%d", s);
                /* past the memory limit: malloc fails instead of the machine */
                printf("%s\\n", malloc((size_t)1 << 32) ? "GOT 4GiB" : "malloc refused");
                return 0;
            }
            """
        )
    )
    exe = tmp_path / "prog"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True)
    out = box.run_file("binary", exe)
    assert out.ok, (out.reason, out.stderr)
    assert (box.results / "sum.txt").read_text() == "6"
    assert out.stdout == b"malloc refused\n"


def test_binary_directory_with_entrypoint(box: Box, tmp_path: Path) -> None:
    d = tmp_path / "bin-pkg"
    (d / "bin").mkdir(parents=True)
    (d / "bin" / "go").write_text("#!/bin/sh\necho ran > /results/ran.txt\n")
    (d / "bin" / "go").chmod(0o700)
    out = box.run_file("binary", d, entrypoint="bin/go")
    assert out.ok, out.stderr
    assert (box.results / "ran.txt").read_text() == "ran\n"


# ---- misuse ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entrypoint",
    ["../outside.py", "/etc/passwd", "missing.py", "link.py"],
    ids=["dotdot_entrypoint", "absolute_entrypoint", "missing_entrypoint", "symlink_out"],
)
def test_bad_entrypoints_refused(box: Box, tmp_path: Path, entrypoint: str) -> None:
    d = tmp_path / "pkg"
    d.mkdir()
    (d / "main.py").write_text("")
    (tmp_path / "outside.py").write_text("")
    (d / "link.py").symlink_to(tmp_path / "outside.py")
    with pytest.raises(InvalidInputError):
        box.run_file("python", d, entrypoint=entrypoint)


def test_directory_without_entrypoint_refused(box: Box, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no entrypoint"):
        box.run_file("python", tmp_path)


def test_limits_validated() -> None:
    with pytest.raises(ValueError, match="wall_seconds"):
        Limits(wall_seconds=0)
    with pytest.raises(ValueError, match="max_processes"):
        Limits(max_processes=0)


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    # monkeypatch restores the cached verdict afterwards, so later tests see the real one.
    monkeypatch.setattr(sandbox, "BWRAP_CANDIDATES", ("/nonexistent/bwrap",))
    monkeypatch.setattr(sandbox, "_probed", False)
    monkeypatch.setattr(sandbox, "_probe_failure", None)


def test_missing_bwrap_refuses_to_run(no_bwrap: None, box: Box) -> None:
    with pytest.raises(SandboxUnavailableError, match="not found"):
        check_sandbox()
    with pytest.raises(SandboxUnavailableError):
        box.run("open('/results/ran', 'w')")
    assert not (box.results / "ran").exists()


def test_verdict_restored_after_missing_bwrap_test() -> None:
    check_sandbox()  # the real sandbox is still trusted after the test above


# ---- the seccomp filter ------------------------------------------------------------------

# Calls every system call named on the command line (name=number) with harmless, invalid
# arguments and prints {name: errno, or "returned N"}.
CALL_EACH = """
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
for item in sys.argv[1:]:
    name, nr = item.split("=")
    ctypes.set_errno(0)
    args = [ctypes.c_long(-1)] * 3 + [ctypes.c_long(0)] * 3
    r = libc.syscall(ctypes.c_long(int(nr)), *args)
    out[name] = ctypes.get_errno() if r == -1 else f"returned {r}"
print(json.dumps(out))
"""


def _numbers(names: tuple[str, ...]) -> tuple[str, ...]:
    arch = pyseccomp.system_arch()
    nrs = {n: pyseccomp.resolve_syscall(arch, n) for n in names}
    return tuple(f"{n}={nr}" for n, nr in nrs.items() if nr >= 0)


@pytest.fixture(scope="module")
def denied_errnos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One sandbox run that tries every denied call (a run per call would be slow)."""
    base = tmp_path_factory.mktemp("seccomp")
    for d in ("inputs", "results"):
        (base / d).mkdir()
    box = Box(base, base / "inputs", base / "results")
    out = box.run(CALL_EACH, args=_numbers(seccomp.DENIED))
    assert out.ok, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("name", seccomp.DENIED)
def test_seccomp_denies(name: str, denied_errnos: dict[str, object]) -> None:
    if name not in denied_errnos:
        assert name in seccomp.DENIED_WHERE_KNOWN
        pytest.skip(f"{name} is unknown to this libseccomp")
    assert denied_errnos[name] == errno.EPERM, f"{name}: {denied_errnos[name]}"


def test_without_the_filter_those_calls_reach_the_kernel(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: with an empty filter, many of the same calls get
    the kernel's own answer (EFAULT, EINVAL, EBADF, ...), so EPERM there is the filter's."""
    empty = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    fd = os.memfd_create("empty-filter")
    with os.fdopen(fd, "w+b") as f:
        empty.export_bpf(f)
        f.seek(0)
        allow_all = seccomp.Filter(bpf=f.read(), arch="native", denied=())
    monkeypatch.setattr(seccomp, "sandbox_filter", lambda: allow_all)
    out = box.run(CALL_EACH, args=_numbers(seccomp.DENIED))
    assert out.ok, out.stderr
    got = json.loads(out.stdout)
    reached = {n for n, e in got.items() if e != errno.EPERM}
    # (41 of the 52 on the development machine; the rest need a capability first.)
    assert {
        *("ptrace", "process_vm_readv", "mount", "unshare", "setns", "kexec_load", "bpf"),
        *("perf_event_open", "keyctl", "io_uring_setup", "userfaultfd", "open_by_handle_at"),
    } <= reached, got


def test_seccomp_denies_namespaces_through_clone(box: Box) -> None:
    flags = ",".join(str(f) for f in seccomp.CLONE_NAMESPACE_FLAGS.values())
    out = box.run(
        f"""
        import ctypes, json, os, signal
        libc = ctypes.CDLL(None, use_errno=True)
        nr = {pyseccomp.resolve_syscall(pyseccomp.system_arch(), "clone")}
        got = []
        for flag in ({flags},):
            ctypes.set_errno(0)
            r = libc.syscall(nr, ctypes.c_ulong(flag | signal.SIGCHLD), None, None, None, None)
            if r == 0:
                os._exit(0)   # a child was made: the filter let it through
            got.append(ctypes.get_errno() if r == -1 else "made a child")
        print(json.dumps(got))
        """
    )
    assert out.ok, out.stderr
    assert json.loads(out.stdout) == [errno.EPERM] * len(seccomp.CLONE_NAMESPACE_FLAGS)


def test_threads_and_subprocesses_still_work_with_clone3_refused(box: Box) -> None:
    out = box.run(
        """
        import ctypes, subprocess, threading
        libc = ctypes.CDLL(None, use_errno=True)
        nr = 435  # clone3 on x86_64 and aarch64
        r = libc.syscall(nr, None, 0)
        print("clone3", ctypes.get_errno() if r == -1 else r)
        seen = []
        t = threading.Thread(target=lambda: seen.append("thread ran"))
        t.start(); t.join()
        print(seen[0])
        print(subprocess.run(["/bin/echo", "child ran"], capture_output=True).stdout.decode())
        """
    )
    assert out.ok, out.stderr
    assert out.stdout.decode().split("\n")[:3] == [
        f"clone3 {errno.ENOSYS}",
        "thread ran",
        "child ran",
    ]


def test_seccomp_denies_personality_flags_that_weaken_memory_layout(box: Box) -> None:
    flags = ",".join(str(f) for f in seccomp.PERSONALITY_FLAGS.values())
    out = box.run(
        f"""
        import ctypes, json
        libc = ctypes.CDLL(None, use_errno=True)
        got = []
        for flag in ({flags},):
            ctypes.set_errno(0)
            r = libc.personality(ctypes.c_ulong(flag))
            got.append(ctypes.get_errno() if r == -1 else "changed")
        print(json.dumps(got))
        print(libc.personality(ctypes.c_ulong(0)))  # plain Linux stays allowed
        """
    )
    assert out.ok, out.stderr
    lines = out.stdout.decode().splitlines()
    assert json.loads(lines[0]) == [errno.EPERM] * len(seccomp.PERSONALITY_FLAGS)
    assert lines[1] == "0"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x32 and i386 are x86_64 ABIs")
def test_seccomp_kills_x32_system_calls(box: Box) -> None:
    out = box.run(
        """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(0x40000000 | 39, 0, 0)   # getpid through the x32 ABI
        print("survived")
        """
    )
    assert out.signal == signal.SIGSYS and b"survived" not in out.stdout, out
    assert out.reason == f"killed by signal {int(signal.SIGSYS)}"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="int 0x80 is the i386 ABI")
def test_seccomp_kills_i386_system_calls(box: Box) -> None:
    out = box.run(
        """
        import ctypes, mmap
        code = bytes.fromhex("b814000000cd80c3")  # mov eax, 20 (i386 getpid); int 0x80; ret
        m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        m.write(code)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        print("pid through int 0x80:", ctypes.CFUNCTYPE(ctypes.c_int)(addr)(), flush=True)
        """
    )
    assert out.signal == signal.SIGSYS and b"pid through" not in out.stdout, out


def test_probe_requires_the_seccomp_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> seccomp.Filter:
        raise seccomp.SeccompUnavailableError("libseccomp is not usable (test)")

    monkeypatch.setattr(seccomp, "sandbox_filter", unavailable)
    monkeypatch.setattr(sandbox, "_probed", False)
    monkeypatch.setattr(sandbox, "_probe_failure", None)
    with pytest.raises(SandboxUnavailableError, match="no seccomp filter for the sandbox"):
        check_sandbox()


# ---- the runtime as an ordinary user (one bubblewrap with a user namespace) --------------

SRC = Path(__file__).resolve().parents[2] / "src"
OTHER_UID = sandbox.SANDBOX_HOST_UID - 1  # an unused uid for the "runtime" in this test

NON_ROOT_DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[2])
sys.path.append(sys.argv[3])  # where pyseccomp is installed (a dependency of the runtime)
from pathlib import Path
from sealroom.runtime.sandbox import Limits, check_sandbox, run_algorithm

check_sandbox()
base = Path(sys.argv[1])
report = {}
for name in ("honest", "fork_bomb", "escape"):
    results = base / ("results-" + name)
    results.mkdir()
    out = run_algorithm(
        "python", base / (name + ".py"), entrypoint=None, args=[], inputs=base / "inputs",
        results=results, limits=Limits(wall_seconds=20, memory_bytes=128 * 2**20, max_processes=8),
    )
    report[name] = {"reason": out.reason, "stdout": out.stdout.decode(),
                    "stderr": out.stderr.decode()[-500:]}
print(json.dumps(report))
"""


@contextlib.contextmanager
def _delegated_cgroup(uid: int) -> Iterator[list[Path]]:
    """A cgroup in each hierarchy the sandbox uses, handed to ``uid`` (what an
    administrator or systemd's Delegate= does for a runtime that is not root)."""
    host = cgroups.detect()
    made: list[Path] = []
    try:
        for key, parent in host.parents.items():
            d = parent / f"sealroom-test-delegated-{os.getpid()}"
            d.mkdir()
            made.append(d)
            if key == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (d / name).write_text((parent / name).read_text())
            if host.version == 2:
                (d / "cgroup.subtree_control").write_text("")
            os.chown(d, uid, uid)
            for name in ("cgroup.procs", "tasks", "cgroup.subtree_control", "cgroup.threads"):
                if (d / name).exists():
                    os.chown(d / name, uid, uid)
        yield made
    finally:
        for d in reversed(made):
            for child in d.glob(cgroups.SANDBOX_PREFIX + "*"):
                child.rmdir()  # the runtime should have removed it: the test then fails
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


PYSECCOMP = str(Path(pyseccomp.__file__).parent)


def _world_readable_path(p: Path) -> bool:
    return all(os.stat(a).st_mode & 0o005 == 0o005 for a in [p, *p.parents])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start the runtime as another uid")
def test_runtime_as_ordinary_user(tmp_path: Path) -> None:
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None or not all(map(_world_readable_path, (SRC, Path(PYSECCOMP)))):
        pytest.skip("no world-readable system python3 and source tree for another uid")
    version = subprocess.run(
        [system_python, "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        check=True,
    )
    if version.stdout.strip() != "True":
        pytest.skip("system python3 is older than 3.11")
    base = Path(tempfile.mkdtemp(prefix="sealroom-nonroot-", dir="/tmp"))
    try:
        (base / "inputs").mkdir()
        (base / "inputs" / "n.txt").write_text("41")
        secret = tmp_path / "secret.txt"  # under root's private pytest directory
        secret.write_text("TOP SECRET")
        (base / "honest.py").write_text(
            "import os\n"
            "n = int(open('/inputs/n.txt').read()) + 1\n"
            "open('/results/n.txt', 'w').write(str(n))\n"
            "print(os.getuid(), n)\n"
        )
        (base / "fork_bomb.py").write_text(
            "import os, time\n"
            "forked = 0\n"
            "try:\n"
            "    while forked < 200:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(600)\n"
            "            os._exit(0)\n"
            "        forked += 1\n"
            "finally:\n"
            "    print('forked', forked, flush=True)\n"
        )
        (base / "escape.py").write_text(
            "import socket\n"
            f"for p in ({str(secret)!r}, '/etc/shadow', '/work'):\n"
            "    try:\n"
            "        print('READ', open(p).read()[:10])\n"
            "    except OSError:\n"
            "        print('denied')\n"
            "try:\n"
            "    socket.create_connection(('10.255.255.1', 80), timeout=2)\n"
            "    print('CONNECTED')\n"
            "except OSError:\n"
            "    print('no network')\n"
        )
        for p in [base, *base.rglob("*")]:
            os.chown(p, OTHER_UID, OTHER_UID)
        base.chmod(0o700)
        with _delegated_cgroup(OTHER_UID) as delegated:

            def enter_delegated_cgroup() -> None:
                for d in delegated:
                    (d / "cgroup.procs").write_text(str(os.getpid()))

            driver = subprocess.run(
                [system_python, "-I", "-c", NON_ROOT_DRIVER, str(base), str(SRC), PYSECCOMP],
                capture_output=True,
                text=True,
                user=OTHER_UID,
                group=OTHER_UID,
                extra_groups=[],
                env={"PATH": "/usr/bin:/bin"},
                cwd="/",
                timeout=120,
                preexec_fn=enter_delegated_cgroup,
            )
            assert driver.returncode == 0, driver.stderr
            # The runtime removed the cgroup of each of its runs.
            assert [list(d.glob(cgroups.SANDBOX_PREFIX + "*")) for d in delegated] == [
                [] for _ in delegated
            ]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report = json.loads(driver.stdout)
    assert report["honest"]["reason"] == "ok", report["honest"]
    assert report["honest"]["stdout"] == "65534 42\n"
    bomb = report["fork_bomb"]
    assert bomb["reason"] == "exit 1", bomb
    assert int(bomb["stdout"].split()[1]) <= 8
    escape = report["escape"]
    assert escape["reason"] == "ok", escape
    assert "READ" not in escape["stdout"] and "CONNECTED" not in escape["stdout"]
    assert escape["stdout"].count("denied") == 3


def test_concurrent_runs_get_distinct_uids() -> None:
    """Each run leases its own host uid, so per-uid limits never mix two computations."""
    if os.geteuid() != 0:
        pytest.skip("uid leases apply when the runtime runs as root")
    with sandbox._UidLease() as a, sandbox._UidLease() as b:
        assert a != b
        assert 0 <= a - sandbox.SANDBOX_HOST_UID < sandbox.UID_RANGE
    with sandbox._UidLease() as c:  # released leases can be taken again
        assert 0 <= c - sandbox.SANDBOX_HOST_UID < sandbox.UID_RANGE
