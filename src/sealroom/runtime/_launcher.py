"""The in-sandbox half of the algorithm sandbox (see sandbox.py and docs/adr/0010-sandbox.md).

This file is bind-mounted read-only into the sandbox at /opt/sealroom/launcher.py and run
by the enclave's own interpreter in isolated mode (``python -I -S -B``). It therefore
imports only the standard library (and, for wasm, the wasmtime package that sandbox.py
binds at /opt/sealroom/lib). It never imports sealroom.

Stage 1 (no argument) runs first, as the user that started bubblewrap: it applies the
rlimits and CPU affinity from the spec, then either drops to the dedicated sandbox uid and
executes the inner bubblewrap (when the runtime is root), or continues with stage 2.

Stage 2 (``--stage2``) runs as the unprivileged sandbox user: it forks the algorithm,
waits for it and writes one JSON status line (exit code or signal, memory error) to the
status pipe the runtime passed down. The status is the algorithm's own claim about itself
(it runs as the same uid); the runtime enforces time and result limits from outside.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from typing import Any

SPEC_PATH = "/opt/sealroom/spec.json"
PR_SET_DUMPABLE = 4

_RLIMITS = {
    "AS": resource.RLIMIT_AS,
    "DATA": resource.RLIMIT_DATA,
    "FSIZE": resource.RLIMIT_FSIZE,
    "NPROC": resource.RLIMIT_NPROC,
    "CPU": resource.RLIMIT_CPU,
    "CORE": resource.RLIMIT_CORE,
    "NOFILE": resource.RLIMIT_NOFILE,
}


def _die(msg: str, code: int = 125) -> None:
    os.write(2, f"sealroom sandbox: {msg}\n".encode())
    os._exit(code)


def _caps_are_empty() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("CapPrm:", "CapEff:", "CapAmb:")) and int(line.split()[1], 16):
                return False
    return True


def stage1(spec: dict[str, Any]) -> None:
    s1 = spec["stage1"]
    for name, (soft, hard) in s1["rlimits"].items():
        resource.setrlimit(_RLIMITS[name], (soft, hard))
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[: max(1, int(s1["vcpus"]))])
    drop = s1["drop_to"]
    if drop is not None:
        # Root mode: RLIMIT_NPROC is ignored for uid 0, so the algorithm runs under a
        # dedicated uid with no capabilities (the bounding set is dropped by bwrap).
        uid, gid = int(drop[0]), int(drop[1])
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getuid() != uid or os.geteuid() != uid or not _caps_are_empty():
            _die("could not drop privileges")
    if s1["inner"] is not None:
        inner: list[str] = s1["inner"]
        try:
            os.execv(inner[0], inner)  # noqa: S606 - argv built by the runtime, no shell
        except OSError as e:
            _die(f"cannot start the inner sandbox: {e}")
    stage2(spec)


def _python_child(s2: dict[str, Any], note_fd: int) -> int:
    target = s2["target"]
    sys.path[:0] = s2["sys_path"]
    sys.argv = [target, *s2["args"]]
    import runpy

    try:
        runpy.run_path(target, run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    except MemoryError:
        os.write(note_fd, b"memory")
        traceback.print_exc()
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _wasm_child(s2: dict[str, Any], note_fd: int) -> int:
    sys.path.insert(0, "/opt/sealroom/lib")
    import wasmtime

    w = s2["wasm"]
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.parallel_compilation = False
    fuel = w["fuel"]
    if fuel is not None:
        config.consume_fuel = True
    engine = wasmtime.Engine(config)
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=int(w["memory_bytes"]))
    if fuel is not None:
        store.set_fuel(int(fuel))
    store.set_epoch_deadline(1)
    wasi = wasmtime.WasiConfig()
    wasi.argv = [os.path.basename(s2["target"]), *s2["args"]]
    wasi.env = [("SEALROOM_INPUTS", "/inputs"), ("SEALROOM_RESULTS", "/results")]
    # Preopen order is part of the contract: fd 3 is /inputs, fd 4 is /results.
    wasi.preopen_dir("/inputs", "/inputs", fs_mutable=False)
    wasi.preopen_dir("/results", "/results", fs_mutable=True)
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    store.set_wasi(wasi)

    deadline = float(w["deadline_monotonic"])

    def ticker() -> None:
        # One epoch tick at the wall deadline interrupts the module at its next check.
        time.sleep(max(0.0, deadline - time.monotonic()))
        engine.increment_epoch()

    threading.Thread(target=ticker, daemon=True).start()
    try:
        module = wasmtime.Module.from_file(engine, s2["target"])
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        instance = linker.instantiate(store, module)
        export = instance.exports(store).get(s2["entry"])
        if not isinstance(export, wasmtime.Func):
            print(f"wasm module exports no function {s2['entry']!r}", file=sys.stderr)
            return 1
        export(store)
    except wasmtime.ExitTrap as e:
        return int(e.code)
    except wasmtime.Trap as e:
        code = e.trap_code
        if code == wasmtime.TrapCode.INTERRUPT:
            os.write(note_fd, b"epoch")
        elif code == wasmtime.TrapCode.OUT_OF_FUEL:
            os.write(note_fd, b"fuel")
        print(f"wasm trap: {e.message}", file=sys.stderr)
        return 1
    except wasmtime.WasmtimeError as e:
        print(f"wasm error: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        os.write(note_fd, b"memory")
        return 1
    return 0


def _binary_child(s2: dict[str, Any]) -> None:
    target = s2["target"]
    try:
        os.execv(target, [target, *s2["args"]])  # noqa: S606 - the algorithm, sandboxed
    except OSError as e:
        _die(f"cannot execute {target}: {e}", 126)


def _probe() -> None:
    """Report what the sandbox looks like from inside (check_sandbox compares it)."""
    with open("/proc/self/status") as f:
        status = [line.split() for line in f]
    nnp = ["NoNewPrivs:", "1"] in status
    mode = next((int(p[1]) for p in status if p[:1] == ["Seccomp:"]), None)
    libc = ctypes.CDLL(None, use_errno=True)
    traced = libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME: the filter answers EPERM
    with open("/proc/net/dev") as f:
        interfaces = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
    report = {
        "uid": os.getuid(),
        "caps_empty": _caps_are_empty(),
        "no_new_privs": nnp,
        "seccomp": mode,
        "ptrace_errno": ctypes.get_errno() if traced == -1 else None,
        "interfaces": interfaces,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)


def stage2(spec: dict[str, Any]) -> None:
    s2 = spec["stage2"]
    status_fd = int(s2["status_fd"])
    os.set_inheritable(status_fd, False)
    # Not dumpable: the algorithm (same uid) can neither ptrace this process nor open its
    # status pipe through /proc/<pid>/fd.
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    note_r, note_w = os.pipe()
    # "started" tells the runtime the sandbox was built: a failure before this line is
    # the sandbox's, after it the algorithm's.
    os.write(status_fd, b"started\n")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(status_fd)
        os.close(note_r)
        os.set_inheritable(note_w, False)
        # The algorithm itself may be dumpable (its own /proc/self/fd etc. stay readable);
        # it no longer holds anything of the launcher's.
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        kind = s2["kind"]
        if kind == "probe":
            _probe()
        if kind == "binary":
            _binary_child(s2)
        code = _python_child(s2, note_w) if kind == "python" else _wasm_child(s2, note_w)
        raise SystemExit(code)
    os.close(note_w)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _, wstatus = os.waitpid(pid, 0)
    # The note was written before the algorithm ended; read only what is there (processes
    # it left behind may still hold the write end, so never wait for end-of-file).
    os.set_blocking(note_r, False)
    try:
        note = os.read(note_r, 64)
    except BlockingIOError:
        note = b""
    status: dict[str, Any] = {"note": note[:64].decode("ascii", "replace")}
    if os.WIFSIGNALED(wstatus):
        status["signal"] = os.WTERMSIG(wstatus)
        rc = 128 + os.WTERMSIG(wstatus)
    else:
        status["exit_code"] = os.WEXITSTATUS(wstatus)
        rc = os.WEXITSTATUS(wstatus)
    try:
        os.write(status_fd, json.dumps(status).encode() + b"\n")
    except OSError:
        pass
    os._exit(rc)


def main() -> None:
    with open(SPEC_PATH, "rb") as f:
        spec = json.loads(f.read())
    if sys.argv[1:] == ["--stage2"]:
        stage2(spec)
    else:
        stage1(spec)


if __name__ == "__main__":
    main()
