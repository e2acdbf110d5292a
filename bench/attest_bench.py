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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from benchlib import Row, paired_rates, print_rows
from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.snp.foreign import report_from_virtee

HERE = Path(__file__).resolve().parent
VECTORS = (HERE / ".." / ".." / "shared" / "vectors").resolve()
SNP = kinds.get("snp")


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
    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
