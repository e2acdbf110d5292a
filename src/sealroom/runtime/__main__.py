"""The enclave runtime process: `python -m sealroom.runtime --manifest M --tee SPEC`.

Started by `sealroom enclave run` (and later by the host agent) inside the TEE. Prints one
JSON line on stdout once it listens ({"event": "listening", "url": ..., ...}), serves until
SIGTERM/SIGINT (or --linger seconds after the run ended), then wipes enclave storage.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from sealroom.errors import SealroomError
from sealroom.manifest import Manifest
from sealroom.runtime.computation import Computation
from sealroom.runtime.sandbox import check_sandbox
from sealroom.runtime.server import bind, serve_in_thread
from sealroom.tee.base import open_provider


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sealroom-runtime", description=__doc__)
    ap.add_argument("--manifest", required=True, type=Path)
    ap.add_argument("--tee", required=True, help="evidence provider, e.g. sim:/run/sim.sock")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (loopback)")
    ap.add_argument("--workdir", type=Path, default=None, help="enclave storage base")
    ap.add_argument(
        "--linger", type=float, default=None, help="exit this many seconds after the run ended"
    )
    args = ap.parse_args(argv)
    try:
        check_sandbox()  # refuse to start if untrusted code could not be contained
        manifest = Manifest.load(args.manifest)
        provider = open_provider(args.tee)
        host, _, port = args.listen.rpartition(":")
        base = args.workdir
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="sealroom-enclave-", dir=base))
        comp = Computation(manifest, workdir, provider)
        server = bind(host or "127.0.0.1", int(port or 0), comp)
    except SealroomError as e:
        print(json.dumps({"event": "error", "code": e.code, "message": e.message}), flush=True)
        return e.exit_code
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve_in_thread(server)
    print(
        json.dumps(
            {
                "event": "listening",
                "url": server.url,
                "manifest_hash": comp.manifest_hash.hex(),
                "keys_digest": comp.keys.public.digest.hex(),
            }
        ),
        flush=True,
    )
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
        print(json.dumps({"event": "stopped", "state": comp.state.phase.value}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
