"""The enclave runtime process: `python -m sealroom.runtime --manifest M --tee SPEC`.

Started by `sealroom enclave run` (and by the host agent) inside the TEE. Prints one
JSON line on stdout once it listens ({"event": "listening", "url": ..., ...}), serves until
SIGTERM/SIGINT (or --linger seconds after the run ended), then wipes enclave storage.

``--listen`` is ``HOST:PORT`` (loopback TCP) or ``unix:PATH`` (the host agent relays a
TCP port to it). After the listening line, stdout carries host-visible JSON lines only:
``{"event": "state", "state", "reason", "slots"}`` on every phase change and
``{"event": "enclave_event", "seq", "type", "message"}`` for every (public) event: what
the algorithm prints is never an event; it is sealed into the run log (docs/adr/0017).
With ``--outbox DIR``, a final state first leaves receipt.json, result.<consumer>.sealed
and DONE there.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from pathlib import Path

from sealroom.errors import SealroomError
from sealroom.runtime.storage import private_mount_namespace


def _probe_early() -> None:
    from sealroom.runtime.sandbox import check_sandbox

    with contextlib.suppress(SealroomError):  # cached: raised again before listening
        check_sandbox()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sealroom-runtime", description=__doc__)
    ap.add_argument("--manifest", type=Path, default=None)
    ap.add_argument(
        "--service", type=Path, default=None, help="run a long-lived service (a spec file)"
    )
    ap.add_argument(
        "--model", type=Path, default=None, help="serve one pinned model (a model spec file)"
    )
    ap.add_argument(
        "--weights", type=Path, default=None, help="the model's weights (checked against --model)"
    )
    ap.add_argument("--tee", required=True, help="evidence provider, e.g. sim:/run/sim.sock")
    ap.add_argument(
        "--listen", default="127.0.0.1:0", help="HOST:PORT (loopback) or unix:/path/to.sock"
    )
    ap.add_argument(
        "--outbox", type=Path, default=None, help="where a final state leaves receipt + results"
    )
    ap.add_argument("--workdir", type=Path, default=None, help="enclave storage base")
    ap.add_argument(
        "--storage",
        choices=("auto", "tmpfs", "disk"),
        default="auto",
        help="enclave storage: a private tmpfs sized by the manifest (needs root), a "
        "directory on disk, or auto (tmpfs where possible, else disk, and say so)",
    )
    ap.add_argument(
        "--linger", type=float, default=None, help="exit this many seconds after the run ended"
    )
    args = ap.parse_args(argv)
    if sum(x is not None for x in (args.manifest, args.service, args.model)) != 1:
        ap.error("give exactly one of --manifest, --service and --model")
    if (args.model is None) != (args.weights is None):
        ap.error("--model and --weights go together")
    # First, while the process has one thread: the kernel refuses it later.
    namespace_note = private_mount_namespace() if args.storage != "disk" else "not asked"
    # The sandbox probe (bubblewrap and a launcher self-check) mostly waits on child
    # processes: start it now, so it runs while the rest of the runtime is imported.
    # Its verdict is cached; run() calls check_sandbox() before anything listens and
    # refuses to start on a failed probe exactly as before (docs/bench.md).
    threading.Thread(target=_probe_early, name="sealroom-probe", daemon=True).start()
    from sealroom.runtime.computation_main import run

    return run(args, namespace_note)


if __name__ == "__main__":
    sys.exit(main())
