"""Shared constants for the Intel DCAP tests (paths, pinned times)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

VECTORS = (Path(__file__).resolve().parents[3] / ".." / "shared" / "vectors").resolve()
DATA = Path(__file__).resolve().parent / "data"


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


# A time at which each vector's collateral (TCB info, QE identity, CRLs) and
# certificates are all current. Quotes without collateral: any time in the PCK validity.
PINNED = {
    "tdx_v4_phala": at("2025-07-01T00:00:00"),
    "sgx_v3_phala": at("2025-07-01T00:00:00"),
    "tdx_v5_phala_tcb_unmatched": at("2026-03-01T00:00:00"),
    "tdx_v4_gotdx_spr": at("2023-06-20T00:00:00"),
    "tdx_v5_gotdx": at("2026-02-15T00:00:00"),
    "trustee_fmspc00a06d080000": at("2025-11-01T00:00:00"),
    "trustee": at("2025-01-01T00:00:00"),
    "azure_tdx": at("2025-01-01T00:00:00"),
}
