"""The enclave runtime for one computation: everything after the start-up checks of
``sealroom.runtime.__main__`` (which imports this module while the sandbox probe runs).
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from sealroom.errors import SealroomError, UnavailableError
from sealroom.manifest import Manifest
from sealroom.protocol.runtime_lines import (
    EnclaveEventLine,
    ErrorLine,
    Listening,
    OutboxFailed,
    StateLine,
    Stopped,
    WipeIncomplete,
)
from sealroom.runtime import state as sm
from sealroom.runtime.computation import Computation, storage_bytes
from sealroom.runtime.sandbox import check_sandbox
from sealroom.runtime.server import bind_listen, serve_in_thread
from sealroom.runtime.storage import EnclaveStorage
from sealroom.tee.base import open_provider


class _Lines:
    """Host-visible JSON lines on stdout, written by one thread from a queue, so the
    enclave never blocks on a slow (or gone) reader. Held back until ``open()`` (the
    ``listening`` line comes first)."""

    def __init__(self) -> None:
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._broken = False

    def put(self, obj: dict[str, Any]) -> None:
        self._q.put(obj)

    def write(self, obj: dict[str, Any]) -> None:
        if self._broken:
            return
        try:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):  # the reader went away: the enclave goes on
            self._broken = True

    def open(self) -> None:
        def pump() -> None:
            while (obj := self._q.get()) is not None:
                self.write(obj)

        self._thread = threading.Thread(target=pump, name="sealroom-stdout", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._q.put(None)
        if self._thread is not None:
            self._thread.join(timeout)


def _state_line(st: sm.State) -> dict[str, Any]:
    return StateLine(
        state=st.phase,
        reason=st.reason,
        slots={
            n: ("filled" if n in st.filled else "uploading" if n in st.reserved else "empty")
            for n in st.slots
        },
    ).line()


def run(args: argparse.Namespace, namespace_note: str | None) -> int:
    """Serve one computation (or a service / model) until told to stop."""
    lines = _Lines()
    if args.service is not None or args.model is not None:
        from sealroom.runtime.service_main import run_service

        return run_service(args, namespace_note, lines)
    outbox: Path | None = args.outbox

    def on_event(item: dict[str, Any]) -> None:
        # Events hold public lifecycle facts only (computation.public_event).
        lines.put(
            EnclaveEventLine(seq=item["seq"], type=item["type"], message=item["message"]).line()
        )

    def on_state(st: sm.State) -> None:
        if st.finished and outbox is not None:
            try:
                comp.write_outbox(outbox)
            except SealroomError:
                pass  # stopped before the run ended: no receipt, nothing to hand out
            except OSError as e:
                lines.put(OutboxFailed(message=str(e.strerror or e)).line())
        lines.put(_state_line(st))

    storage: EnclaveStorage | None = None
    try:
        check_sandbox()  # refuse to start if untrusted code could not be contained
        manifest = Manifest.load(args.manifest)
        provider = open_provider(args.tee)
        storage = EnclaveStorage.create(
            args.workdir,
            storage_bytes(manifest),
            mode=args.storage,
            namespace_note=namespace_note,
        )
        if args.storage == "tmpfs" and storage.kind != "tmpfs":
            raise UnavailableError(storage.note, code="storage-unavailable")
        comp = Computation(manifest, storage.path, provider, on_event=on_event, on_state=on_state)
        server = bind_listen(args.listen, comp)
    except SealroomError as e:
        if storage is not None:
            storage.close()
        print(json.dumps(ErrorLine(code=e.code, message=e.message).line()), flush=True)
        return e.exit_code
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve_in_thread(server)
    lines.write(
        Listening(
            url=server.url,
            manifest_hash=comp.manifest_hash.hex(),
            keys_digest=comp.keys.public.digest.hex(),
            storage=storage.describe(),
        ).line()
    )
    lines.put(_state_line(comp.state))
    lines.open()
    # KBS-sourced datasets: the enclave fetches and decrypts them itself (ADR 0027).
    # Imported only then: its HTTP client stack (httpx) is a third of the runtime's
    # import time, and most computations have no KBS slot (docs/bench.md).
    if any(s.kbs for s in comp.specs.values()):
        from sealroom.runtime import kbs_source

        kbs_source.start(comp)
    try:
        while not stop.is_set():
            if args.linger is not None and comp.state.finished:
                stop.wait(args.linger)
                break
            stop.wait(0.2)
    finally:
        server.shutdown()
        server.server_close()
        comp.close()
        wiped = storage.close()
        lines.close()
        if not wiped.clean:
            # Counts only: the names are the algorithm's and may carry its data.
            lines.write(WipeIncomplete(failures=wiped.failures).line())
        lines.write(Stopped(state=comp.state.phase).line())
    return 0
