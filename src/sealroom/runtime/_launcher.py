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


class _Bridge:
    """A service's only network path (docs/adr/0032): one thread, non-blocking sockets.
    On ``ingress`` (a Unix socket the enclave connects to) each connection gets a socket
    connected to 127.0.0.1:port, where the workload listens, passed over it; each egress
    port on 127.0.0.1 is joined to its Unix socket
    (the enclave dials the allow-listed destination). Bytes pass unchanged."""

    BUF = 1 << 16

    def __init__(self, b: dict[str, Any]) -> None:
        import selectors
        import socket

        self.socket = socket
        self.sel = selectors.DefaultSelector()
        self.pending: dict[Any, bytearray] = {}
        self.peer: dict[Any, Any] = {}
        self.eof: set[Any] = set()
        with contextlib_suppress():
            os.unlink(b["ingress"])
        ing = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ing.bind(b["ingress"])
        ing.listen(128)
        self._listen(ing, ("handoff", ("127.0.0.1", int(b["port"]))))
        for e in b["egress"]:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind(("127.0.0.1", int(e["port"])))
            t.listen(128)
            self._listen(t, ("unix", e["socket"]))

    def _listen(self, sock: Any, target: tuple[str, Any]) -> None:
        sock.setblocking(False)
        self.sel.register(sock, 1, ("listen", target))

    def _accept(self, sock: Any, target: tuple[str, Any]) -> None:
        socket = self.socket
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        if target[0] == "handoff":
            self._handoff(conn, target[1])
            return
        family = socket.AF_UNIX if target[0] == "unix" else socket.AF_INET
        out = socket.socket(family, socket.SOCK_STREAM)
        try:
            out.connect(target[1])  # local: completes at once or fails at once
        except OSError:
            conn.close()
            out.close()
            return
        for x in (conn, out):
            x.setblocking(False)
            if x.family == socket.AF_INET:
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.pending[x] = bytearray()
        self.peer[conn], self.peer[out] = out, conn
        self.sel.register(conn, 1, ("pipe", None))
        self.sel.register(out, 1, ("pipe", None))

    def _handoff(self, conn: Any, address: tuple[str, int]) -> None:
        """Ingress: dial the workload and hand the connected socket itself to the enclave
        (SCM_RIGHTS), so the enclave's bytes reach the workload with no copy in here."""
        socket = self.socket
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.connect(address)
            tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socket.send_fds(conn, [b"1"], [tcp.fileno()])
        except OSError:
            with contextlib_suppress():
                conn.send(b"0")
        finally:
            tcp.close()
            conn.close()

    def _close(self, x: Any) -> None:
        for s in (x, self.peer.get(x)):
            if s is None or s not in self.pending:
                continue
            if s in self.sel.get_map():
                self.sel.unregister(s)
            s.close()
            self.pending.pop(s, None)
            self.peer.pop(s, None)
            self.eof.discard(s)

    def _events(self, x: Any) -> int:
        ev = 0 if x in self.eof or len(self.pending[self.peer[x]]) >= self.BUF else 1
        return ev | (2 if self.pending[x] else 0)

    def _update(self, *xs: Any) -> None:
        registered = self.sel.get_map()
        for x in xs:
            if x not in self.pending:
                continue
            ev = self._events(x)
            if ev and x in registered:
                self.sel.modify(x, ev, ("pipe", None))
            elif ev:
                self.sel.register(x, ev, ("pipe", None))
            elif x in registered:
                # A selector cannot hold a socket with no events: park it until its peer
                # drains or the buffer empties.
                self.sel.unregister(x)

    def _pipe(self, x: Any, mask: int) -> None:
        other = self.peer[x]
        if mask & 1:
            try:
                data = x.recv(self.BUF)
            except BlockingIOError:
                data = None
            except OSError:
                self._close(x)
                return
            if data == b"":
                self.eof.add(x)
                if not self.pending[other]:
                    with contextlib_suppress():
                        other.shutdown(self.socket.SHUT_WR)
            elif data:
                self.pending[other] += data
        if mask & 2 and self.pending[x]:
            try:
                n = x.send(self.pending[x])
                del self.pending[x][:n]
            except BlockingIOError:
                pass
            except OSError:
                self._close(x)
                return
            if not self.pending[x] and other in self.eof:
                with contextlib_suppress():
                    x.shutdown(self.socket.SHUT_WR)
        if {x, other} <= self.eof and not self.pending[x] and not self.pending[other]:
            self._close(x)
            return
        self._update(x, other)

    def run(self) -> None:
        while True:
            for key, mask in self.sel.select():
                kind, target = key.data
                if kind == "listen":
                    self._accept(key.fileobj, target)
                elif key.fileobj in self.pending:
                    try:
                        self._pipe(key.fileobj, mask)
                    except (OSError, KeyError, ValueError):
                        self._close(key.fileobj)  # one broken pair, never the bridge


class contextlib_suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]


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
    if s2.get("bridge"):
        try:
            bridge = _Bridge(s2["bridge"])
        except OSError as e:
            os.kill(pid, signal.SIGKILL)
            _die(f"cannot set up the service bridge: {e}")
        threading.Thread(target=bridge.run, daemon=True).start()
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
