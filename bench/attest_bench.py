"""Attestation benchmarks: our figure, the peer's figure from the same run, and the ratio.

SNP (issue 2):
  (a) SNP reports verified per second (in-process; certificate-chain signatures cached,
      the report signature, VCEK extensions and validity checked every time) next to the
      bare ECDSA P-384 verify rate of the same crypto library. Target >= 0.8x.
  (b) The same pipeline on sev-attest-tool's bundled sample report + VCEK, next to
      sev-attest-tool (Rust, virtee-based) verifying that sample. Target >= 1.5x.
Other kinds add their rows through `run()` functions in bench/<kind>_bench.py.

Run: .venv/bin/python bench/attest_bench.py   (or `make bench`)
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.snp.foreign import report_from_virtee

Row = tuple[str, float, str, float]
HERE = Path(__file__).resolve().parent
VECTORS = (HERE / ".." / ".." / "shared" / "vectors").resolve()
SNP = kinds.get("snp")


def paired_rates(
    ours: Callable[[], object], peer: Callable[[], object], seconds: float = 3.0
) -> tuple[float, float]:
    """Calls per second of both, measured in alternating slices of the same wall time so
    that background load on the machine hits both figures alike."""
    for _ in range(20):
        ours()
        peer()
    counts, spent = [0, 0], [0.0, 0.0]
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for i, fn in enumerate((ours, peer)):
            start = time.perf_counter()
            for _ in range(25):
                fn()
            spent[i] += time.perf_counter() - start
            counts[i] += 25
    return counts[0] / spent[0], counts[1] / spent[1]


def _bare_p384() -> Callable[[], None]:
    key = ec.generate_private_key(ec.SECP384R1())
    msg = bytes(0x2A0)
    sig = key.sign(msg, ec.ECDSA(hashes.SHA384()))
    pub = key.public_key()
    return lambda: pub.verify(sig, msg, ec.ECDSA(hashes.SHA384()))


def snp_rows() -> list[Row]:
    rows: list[Row] = []
    if (VECTORS / "amd/milan_oak/report.bin").is_file():
        item = EvidenceItem(
            "snp",
            (VECTORS / "amd/milan_oak/report.bin").read_bytes(),
            {"cert": (VECTORS / "amd/milan_oak/vcek.der").read_bytes()},
        )
        ctx = VerifyContext(now=datetime(2025, 6, 1, tzinfo=UTC))
        label = "sealroom SNP verify (real Milan report)"
    else:
        sim = SimAuthority.ephemeral()
        item = sim.evidence(sim.report(measurement=bytes(48)))
        ctx = VerifyContext(now=datetime.now(UTC), extra_roots=(sim.root,))
        label = "sealroom SNP verify (sim report; vectors absent)"
    SNP.verify(item, ctx)  # must succeed before it is timed
    ours, peer = paired_rates(lambda: SNP.verify(item, ctx), _bare_p384())
    rows.append((label, ours, "bare ECDSA P-384 verify (cryptography), same bytes", peer))
    if importlib.util.find_spec("sev_attest_tool") is not None:
        import sev_attest_tool

        sample = sev_attest_tool.SAMPLE_ATTESTATION
        vcek = bytes(sev_attest_tool.SAMPLE_VCEK)
        ours_item = EvidenceItem("snp", report_from_virtee(json.loads(sample)), {"vcek": vcek})
        sctx = VerifyContext(now=datetime(2025, 1, 1, tzinfo=UTC))
        SNP.verify(ours_item, sctx)
        sev_attest_tool.verify_attestation_report(sample, vcek)
        ours_s, peer_s = paired_rates(
            lambda: SNP.verify(ours_item, sctx),
            lambda: sev_attest_tool.verify_attestation_report(sample, vcek),
        )
        rows.append(
            (
                "sealroom SNP verify (sev-attest-tool sample)",
                ours_s,
                "sev-attest-tool verify_attestation_report (same sample)",
                peer_s,
            )
        )
    return rows


def other_rows() -> list[Row]:
    rows: list[Row] = []
    for path in sorted(HERE.glob("*_bench.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run = getattr(module, "run", None)
        if callable(run):
            rows.extend(run())
    return rows


def main() -> int:
    rows = snp_rows() + other_rows()
    width = max(len(r[0]) for r in rows)
    for ours_label, ours, peer_label, peer in rows:
        print(f"{ours_label:<{width}}  ours {ours:>10.1f}/s")
        print(f"{'':<{width}}  peer {peer:>10.1f}/s  ({peer_label})")
        print(f"{'':<{width}}  ratio {ours / peer:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
