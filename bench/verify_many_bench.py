"""Parallel verification benchmark (issue 16): `sealroom attest verify DIR --jobs N` over
many sim evidence files, against twice the single-core bare ECDSA P-384 verify rate.

N simulated SNP reports (signed by an ephemeral sim authority; every file distinct) are
written to a directory, then the real CLI verifies the directory with --jobs 1 and
--jobs 2 (interleaved, --rounds times; one process each, interpreter start included).
Verifies/s = files / wall time. Peer: the bare `cryptography` ECDSA P-384 verify of a
report-sized message on one core in this process, times 2 (what two cores could do if a
verify were nothing but its signature check).

Run:   .venv/bin/python bench/verify_many_bench.py [--files 2000] [--rounds 2]
Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.sim.authority import SimAuthority


def bare_p384_rate(seconds: float = 2.0) -> float:
    key = ec.generate_private_key(ec.SECP384R1())
    msg = bytes(0x2A0)
    sig = key.sign(msg, ec.ECDSA(hashes.SHA384()))
    pub = key.public_key()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            pub.verify(sig, msg, ec.ECDSA(hashes.SHA384()))
        n += 50
    return n / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    sealroom = str(Path(sys.executable).with_name("sealroom"))
    with tempfile.TemporaryDirectory(prefix="verify-many-") as d:
        tmp = Path(d)
        sim = SimAuthority.ephemeral()
        ev = tmp / "evidence"
        ev.mkdir()
        now = datetime.now(UTC)
        for i in range(a.files):
            report = sim.report(measurement=b"\xab" * 48, report_data=i.to_bytes(64, "big"))
            item = sim.evidence(report, collected_at=now)
            (ev / f"{i:05d}.json").write_text(EvidenceBundle.single(item).to_json())
        root = tmp / "sim-root.pem"
        root.write_bytes(sim.root_pem())
        policy = tmp / "policy.yaml"
        policy.write_text(
            "version: 1\nallow_simulated: true\nsnp:\n  measurements: ['" + "ab" * 48 + "']\n"
        )
        env = {**os.environ, "SEALROOM_HOME": str(tmp / "home")}
        rates: dict[int, list[float]] = {1: [], 2: []}
        peer: list[float] = []
        for r in range(a.rounds):
            for jobs in (1, 2) if r % 2 == 0 else (2, 1):
                cmd = [sealroom, "attest", "verify", str(ev), "--policy", str(policy)]
                cmd += ["--root", str(root), "--jobs", str(jobs), "--json"]
                t = time.perf_counter()
                p = subprocess.run(cmd, capture_output=True, env=env)
                wall = time.perf_counter() - t
                if p.returncode != 0:
                    sys.exit(f"verify failed ({p.returncode}): {p.stderr.decode()[-500:]}")
                rates[jobs].append(a.files / wall)
            peer.append(2 * bare_p384_rate())
    med = statistics.median
    ours, two = med(rates[2]), med(peer)
    print(f"attest verify, {a.files} sim files, --jobs 2  ours  {ours:>8.1f} verifies/s")
    print(f"{'':<42}peer  {two:>8.1f} /s  (2 x bare ECDSA P-384 verify, one core)")
    print(f"{'':<42}ratio {ours / two:>8.3f}x")
    print(
        f"--jobs 1: {med(rates[1]):.1f} verifies/s; --jobs 2 / --jobs 1 = "
        f"{ours / med(rates[1]):.2f}; single-core bare ECDSA {two / 2:.0f}/s"
    )
    print("load " + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
