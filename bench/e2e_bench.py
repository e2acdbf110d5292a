"""End-to-end benchmark (issue 4): a whole computation on the sim TEE, next to running
the same algorithm directly, in the same run.

Ours, timed from the party side around each client call:
  create   write the manifest, `launch_local` (sim TEE service, runtime process, its
           sandbox probe, enclave keys, listening)
  attest   `EnclaveClient.attest` (fresh nonce, evidence, binding, policy, TLS pin)
  upload   the algorithm, then the two datasets (the second one starts the run)
  run      from the last upload's answer until the `completed` event (long-poll)
  fetch    `fetch_result`: challenge, sealed result, receipt verified offline, decrypt,
           unpack; then the answer is read and checked (20 + 22 = 42)
The enclave's own event timestamps split `run` into the sandboxed algorithm
(run_started -> run_ended) and sealing + receipt (run_ended -> completed). Stopping the
enclave (storage wipe) is shown but not counted: the party has its answer by then.
Party identities (key pairs) exist beforehand and are not counted.

Peer: `python3 algo.py IN OUT` in a subprocess, with the two inputs as files; the same
algorithm file (it takes its directories from argv, defaulting to the sandbox's
/inputs and /results) and the same interpreter binary the sandbox runs.

Rounds interleave ours and the peer (alternating which goes first); medians are printed.
Target (docs design.md): <= 1.5 s over running directly.

Run:   .venv/bin/python bench/e2e_bench.py            # 5 rounds
       .venv/bin/python bench/e2e_bench.py --runs 11
Needs bubblewrap (Debian), as the runtime does. Not part of CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from sealroom.attestation.sim.authority import SimAuthority
from sealroom.client.enclave import EnclaveClient
from sealroom.crypto.keys import PartyKeys
from sealroom.hostagent.launcher import launch_local, runtime_measurement
from sealroom.manifest import Manifest
from sealroom.protocol.enclave_api import EnclaveEvent

ALGORITHM = b"""\
import pathlib
import sys

inputs = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else '/inputs')
results = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else '/results')
a = int((inputs / 'a').read_text())
b = int((inputs / 'b').read_text())
(results / 'answer.txt').write_text(str(a + b))
"""
A, B, ANSWER = b"20", b"22", "42"
# The interpreter itself, as the sandbox runs it; not a `python3` found on PATH, which
# may be a version-manager shim that costs more than the algorithm (pyenv: ~0.1 s).
PYTHON = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
PHASES = ("create", "attest", "upload algorithm", "upload 2 datasets", "run", "fetch+decrypt")


class Parties(NamedTuple):
    lab: PartyKeys
    dp1: PartyKeys
    dp2: PartyKeys
    alice: PartyKeys


class Timing(NamedTuple):
    phases: dict[str, float]
    sandbox: float  # run_started -> run_ended, enclave clock
    sealing: float  # run_ended -> completed, enclave clock
    stop: float

    @property
    def total(self) -> float:
        return sum(self.phases.values())


def write_files(tmp: Path) -> Path:
    d = tmp / "files"
    d.mkdir()
    (d / "algo.py").write_bytes(ALGORITHM)
    (d / "a").write_bytes(A)
    (d / "b").write_bytes(B)
    return d


def write_manifest(path: Path, files: Path, p: Parties, measurement: str) -> None:
    def h(name: str) -> str:
        return hashlib.sha256((files / name).read_bytes()).hexdigest()

    doc = {
        "version": 1,
        "id": f"e2e-bench-{path.stem}",
        "name": "sum of two private numbers",
        "algorithm": {
            "kind": "python",
            "sha256": h("algo.py"),
            "provider": p.lab.public.to_json_obj(),
            "entrypoint": "algo.py",
            "args": [],
        },
        "datasets": [
            {"name": n, "sha256": h(n), "provider": k.public.to_json_obj(), "max_size": 1024}
            for n, k in (("a", p.dp1), ("b", p.dp2))
        ],
        "consumers": [p.alice.public.to_json_obj()],
        "policy": {
            "version": 1,
            "allow_simulated": True,
            "require": ["snp"],
            "snp": {"measurements": [measurement], "vmpl": [0]},
        },
        "limits": {"vcpus": 1, "memory_mb": 256, "wall_seconds": 30, "max_result_bytes": 1 << 20},
    }
    path.write_text(json.dumps(doc, indent=2))


def ours_once(tmp: Path, files: Path, p: Parties, home: Path, i: int) -> Timing:
    # The parties' policy names the runtime's measurement; taken per round, untimed (the
    # code tree may change between rounds on a development checkout).
    measurement = runtime_measurement().hex()
    marks: dict[str, float] = {}
    t = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        marks[name] = now - t
        t = now

    manifest_path = tmp / f"manifest-{i}.json"
    write_manifest(manifest_path, files, p, measurement)
    manifest = Manifest.load(manifest_path)
    enclave = launch_local(manifest_path, tee="sim", home=home, workdir=tmp / "enclave")
    try:
        root = SimAuthority.load_or_create(home / "sim-authority").root
        client = EnclaveClient(enclave.url, manifest, extra_roots=(root,))
        mark("create")
        client.attest()
        mark("attest")
        client.upload("algorithm", files / "algo.py", p.lab)
        mark("upload algorithm")
        client.upload("a", files / "a", p.dp1)
        client.upload("b", files / "b", p.dp2)
        mark("upload 2 datasets")
        seq = 0
        events: list[EnclaveEvent] = []
        while not any(e.type in ("completed", "failed") for e in events):
            got = client.events(seq, wait=10)
            events += got
            seq = got[-1].seq if got else seq
        mark("run")
        out = tmp / f"out-{i}"
        receipt = client.fetch_result(p.alice, out)
        answer = (out / "answer.txt").read_text().strip()
        mark("fetch+decrypt")
        if not receipt.ok or answer != ANSWER:
            raise RuntimeError(f"the computation went wrong: answer {answer!r}, {events}")
    finally:
        stop_start = time.perf_counter()
        enclave.stop()
        stop = time.perf_counter() - stop_start
    return Timing(
        marks,
        _span(events, "run_started", "run_ended"),
        _span(events, "run_ended", "completed"),
        stop,
    )


def _span(events: list[EnclaveEvent], first: str, last: str) -> float:
    when = {e.type: datetime.fromisoformat(e.time) for e in events}
    return (when[last] - when[first]).total_seconds()


def direct_once(files: Path, tmp: Path, i: int) -> float:
    out = tmp / f"direct-{i}"
    out.mkdir()
    start = time.perf_counter()
    subprocess.run([PYTHON, str(files / "algo.py"), str(files), str(out)], check=True)
    seconds = time.perf_counter() - start
    if (out / "answer.txt").read_text().strip() != ANSWER:
        raise RuntimeError("the direct run computed something else")
    return seconds


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    args = ap.parse_args()
    if shutil.which("bwrap") is None:
        sys.exit("e2e_bench: the runtime needs bubblewrap (Debian 'bubblewrap')")
    signal.signal(signal.SIGTERM, _interrupt)
    ours: list[Timing] = []
    direct: list[float] = []
    with tempfile.TemporaryDirectory(prefix="e2e-bench-") as tmp_s:
        tmp = Path(tmp_s)
        home = tmp / "home"
        os.environ["SEALROOM_HOME"] = str(home)
        files = write_files(tmp)
        parties = Parties(*(PartyKeys.generate(n) for n in ("lab", "dp1", "dp2", "alice")))
        SimAuthority.load_or_create(home / "sim-authority")
        try:
            # One untimed warm-up of each (page cache, bytecode caches).
            ours_once(tmp, files, parties, home, 0)
            direct_once(files, tmp, 0)
            for i in range(1, args.runs + 1):
                order = ("ours", "direct") if i % 2 else ("direct", "ours")
                for who in order:
                    if who == "ours":
                        ours.append(ours_once(tmp, files, parties, home, i))
                    else:
                        direct.append(direct_once(files, tmp, i))
                print(
                    f"  round {i}: ours {ours[-1].total:.3f} s, direct {direct[-1]:.3f} s",
                    flush=True,
                )
        except KeyboardInterrupt:
            print("\ninterrupted: the enclave was stopped")
            return 130
    report(ours, direct)
    return 0


def report(ours: list[Timing], direct: list[float]) -> None:
    n = len(ours)
    total = statistics.median(t.total for t in ours)
    peer = statistics.median(direct)
    label = f"e2e computation (sim), median of {n}"
    pad = " " * len(label)
    print(f"\n{label}  ours  {total:>7.3f} s  (create -> verify -> uploads -> run -> decrypt)")
    print(f"{pad}  peer  {peer:>7.3f} s  ({Path(PYTHON).name} algo.py IN OUT, run directly)")
    print(f"{pad}  ratio {total / peer:>7.1f}x   overhead {total - peer:.3f} s (target <= 1.5 s)")
    print("\nwhere our time goes (medians per phase; they need not add up to the median total):")
    for phase in PHASES:
        v = statistics.median(t.phases[phase] for t in ours)
        print(f"  {phase:<20} {v:7.3f} s  {100 * v / total:5.1f}%")
    sandbox = statistics.median(t.sandbox for t in ours)
    sealing = statistics.median(t.sealing for t in ours)
    print(f"    of run: sandboxed algorithm {sandbox:.3f} s, sealing + receipt {sealing:.3f} s")
    stop = statistics.median(t.stop for t in ours)
    print(f"  (stop + wipe, not counted: {stop:.3f} s)")


if __name__ == "__main__":
    sys.exit(main())
