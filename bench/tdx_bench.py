"""Intel DCAP quote verification per second: sealroom next to dcap-qvl (Phala, Rust, PyPI),
the same quote, the same collateral and the same ``now`` in the same run. Target >= 1.5x.

Ours: ``kinds.get("tdx"|"sgx").verify`` with the collateral as an attachment; parsed
collateral, verified certificate chains, collateral signatures and CRL verdicts are cached
by exact bytes after the first call. Every call still parses the quote, checks the PCK
chain's validity at ``now``, verifies the QE report signature, the QE binding and the
quote signature, checks the collateral windows and evaluates the TCB level.
Peer: ``dcap_qvl.verify(quote, collateral, now)`` with the collateral object built once.

Run: .venv/bin/python bench/tdx_bench.py   (also picked up by bench/attest_bench.py)
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import Row, paired_rates, print_rows
from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext

HERE = Path(__file__).resolve().parent
INTEL = (HERE / ".." / ".." / "shared" / "vectors" / "intel").resolve()


def _cases() -> list[tuple[str, str, bytes, bytes, datetime, bytes | None]]:
    """(label, kind, quote, collateral JSON, now, root DER for the peer or None)."""
    if (INTEL / "tdx_v4_phala" / "quote.bin").is_file():
        return [
            (
                "TDX v4 quote (Phala vector)",
                "tdx",
                (INTEL / "tdx_v4_phala" / "quote.bin").read_bytes(),
                (INTEL / "tdx_v4_phala" / "collateral.json").read_bytes(),
                datetime(2025, 7, 1, tzinfo=UTC),
                None,
            ),
            (
                "SGX v3 quote (Phala vector)",
                "sgx",
                (INTEL / "sgx_v3_phala" / "quote.bin").read_bytes(),
                (INTEL / "sgx_v3_phala" / "collateral.json").read_bytes(),
                datetime(2025, 7, 1, tzinfo=UTC),
                None,
            ),
        ]
    from cryptography.hazmat.primitives import serialization

    from sealroom.testing.fake_intel import FakeIntelPki

    now = datetime(2026, 1, 15, tzinfo=UTC)
    pki = FakeIntelPki(now)
    root = pki.root.cert.public_bytes(serialization.Encoding.DER)
    return [
        ("TDX v4 quote (fake PKI; vectors absent)", "tdx", pki.quote(), pki.collateral(), now, root)
    ]


def _measure(
    dcap_qvl: Any,
    label: str,
    kind_name: str,
    quote: bytes,
    collateral: bytes,
    now: datetime,
    root: bytes | None,
) -> Row:
    kind = kinds.get(kind_name)
    extra: tuple[Any, ...] = ()
    if root is not None:
        from sealroom.attestation.x509util import load_certificate

        extra = (load_certificate(root),)
    item = EvidenceItem(kind_name, quote, {"collateral": collateral})
    ctx = VerifyContext(now=now, extra_roots=extra)
    peer_coll = dcap_qvl.QuoteCollateralV3.from_json(collateral.decode())
    now_secs = int(now.timestamp())

    def ours() -> object:
        return kind.verify(item, ctx)

    def peer() -> Any:
        if root is None:
            return dcap_qvl.verify(quote, peer_coll, now_secs)
        return dcap_qvl.verify_with_root_ca(quote, peer_coll, root, now_secs)

    # Both must succeed, and agree, before anything is timed.
    ours_status = kind.verify(item, ctx).to_dict()["tcb_status"]
    peer_status = peer().status
    assert ours_status == peer_status, (label, ours_status, peer_status)
    ours_rate, peer_rate = paired_rates(ours, peer)
    return (
        f"sealroom {kind_name} verify, {label}",
        ours_rate,
        "dcap-qvl verify (same quote, collateral, now)",
        peer_rate,
    )


def run() -> list[Row]:
    if importlib.util.find_spec("dcap_qvl") is None:
        print("tdx_bench: dcap-qvl is not installed; no peer figure", file=sys.stderr)
        return []
    import dcap_qvl

    return [_measure(dcap_qvl, *case) for case in _cases()]


def main() -> int:
    print_rows(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
