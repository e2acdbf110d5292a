"""Enclave start benchmark (issue 16): where `create` spends its time on the sim backend.

Each round starts a fresh interpreter, as the host agent does for every computation, and
times inside it, with wall clock and the process's own CPU time:
  imports        everything the runtime loads (`sealroom.runtime.__main__` and the
                 `computation_main` it imports while the sandbox probe runs)
  sandbox probe  `check_sandbox()` (bubblewrap + the launcher self-check; its CPU is in
                 child processes, so only its wall time shows)
  manifest       `Manifest.load` (schema, keys, the policy's sections)
  provider, storage, computation, listen: the rest of the start, up to a bound socket
Headline ("ours"): `python -m sealroom.runtime --manifest M --tee sim:SOCK` as the host
agent starts it, timed from spawn to its `listening` line (then stopped with SIGTERM).

Peer: a bare interpreter start (`python -c pass`), the floor of any runtime that is a
fresh Python process; rounds alternate the two. Medians are printed.

Run:   .venv/bin/python bench/start_bench.py [--runs 9]
Needs bubblewrap, as the runtime does. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e_bench import Parties, write_files, write_manifest
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.sim.service import SimTeeService
from sealroom.crypto.keys import PartyKeys
from sealroom.hostagent.launcher import runtime_measurement
from sealroom.manifest import Manifest

CHILD = """
import json, sys, time
T, C = time.perf_counter(), time.process_time()
marks = []
def mark(name):
    global T, C
    t, c = time.perf_counter(), time.process_time()
    marks.append((name, t - T, c - C))
    T, C = t, c
import sealroom.runtime.__main__
try:
    import sealroom.runtime.computation_main  # imported by main() while the probe runs
except ImportError:  # before 2026-12-05 __main__ imported everything itself
    pass
mark("imports")
from pathlib import Path
from sealroom.manifest import Manifest
from sealroom.runtime.computation import Computation, storage_bytes
from sealroom.runtime.sandbox import check_sandbox
from sealroom.runtime.server import bind_listen
from sealroom.runtime.storage import EnclaveStorage
from sealroom.tee.base import open_provider
check_sandbox(); mark("sandbox probe")
m = Manifest.load(Path(sys.argv[1])); mark("manifest")
provider = open_provider(sys.argv[2]); mark("provider")
st = EnclaveStorage.create(Path(sys.argv[3]), storage_bytes(m), mode="disk", namespace_note="")
mark("storage")
comp = Computation(m, st.path, provider, on_event=lambda i: None, on_state=lambda s: None)
mark("computation")
server = bind_listen("127.0.0.1:0", comp); mark("listen")
server.server_close(); st.close()
print(json.dumps(marks))
"""


def to_listening(manifest: Path, tee: str, workdir: Path) -> float:
    """Spawn the runtime as the host agent does; seconds until it says it listens."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "sealroom.runtime", "--manifest", str(manifest)),
            *("--tee", tee, "--listen", "127.0.0.1:0", "--storage", "disk"),
            *("--workdir", str(workdir)),
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = time.perf_counter() - t
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    if json.loads(line).get("event") != "listening":
        sys.exit(f"the runtime did not start: {line}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="start-bench-") as d:
        tmp = Path(d)
        files = write_files(tmp)
        parties = Parties(*(PartyKeys.generate(n) for n in ("lab", "dp1", "dp2", "alice")))
        manifest = tmp / "manifest.json"
        write_manifest(manifest, files, parties, runtime_measurement().hex())
        service = SimTeeService(
            SimAuthority.load_or_create(tmp / "sim-authority"),
            measurement=runtime_measurement(),
            host_data=Manifest.load(manifest).manifest_hash,
            socket_path=tmp / "sim-tee.sock",
        )
        service.start()
        phases: dict[str, list[tuple[float, float]]] = {}
        ours: list[float] = []
        peer: list[float] = []
        try:
            for i in range(args.runs + 1):  # round 0: untimed warm-up
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                p = time.perf_counter() - t
                o = to_listening(manifest, f"sim:{service.socket_path}", tmp / f"run-{i}")
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD,
                        str(manifest),
                        f"sim:{service.socket_path}",
                        str(tmp / f"enclave-{i}"),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                if i == 0:
                    continue
                ours.append(o)
                peer.append(p)
                for name, wall, cpu in json.loads(out.strip().splitlines()[-1]):
                    phases.setdefault(name, []).append((wall, cpu))
        finally:
            service.stop()
    med = statistics.median
    label = f"enclave runtime start (sim), median of {args.runs}"
    pad = " " * len(label)
    print(
        f"{label}  ours  {med(ours):>7.3f} s  (python -m sealroom.runtime: spawn .. listening line)"
    )
    print(f"{pad}  peer  {med(peer):>7.3f} s  (python -c pass)")
    print(f"{pad}  ratio {med(ours) / med(peer):>7.1f}x")
    print("\nwhere the start goes, step by step in a fresh process (medians; wall, own CPU):")
    for name, xs in phases.items():
        print(f"  {name:<14} {med(w for w, _ in xs):7.3f} s  {med(c for _, c in xs):7.3f} s CPU")
    print("load " + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
