"""Shared fixtures for the NVIDIA SPDM tests: vector paths and pinned verification times."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[3] / ".." / "shared" / "vectors" / "nvidia"

# Every NVIDIA device chain in the vectors is valid from 2022-03-01 (notBefore of the
# Provisioner ICA, the youngest certificate) to 9999-12-31 23:59:59 (every certificate).
# Each vector is pinned to a time inside that window, near when it was produced (driver
# release dates), so the tests never read the clock.
NOW = {
    "h100_nvtrust": datetime(2024, 9, 1, tzinfo=UTC),  # driver 550.90.07
    "h100_trustee_coco": datetime(2025, 11, 1, tzinfo=UTC),  # driver 580.95.05
    "hgx_ppcie": datetime(2026, 1, 15, tzinfo=UTC),  # driver 590.12
}
CHAIN_NOT_BEFORE = datetime(2022, 3, 1, tzinfo=UTC)


def vector(rel: str) -> Path:
    path = VECTORS / rel
    if not VECTORS.is_dir():
        pytest.skip(f"NVIDIA vectors not found at {VECTORS} (../shared/vectors is absent)")
    return path


def read_vector(rel: str) -> bytes:
    return vector(rel).read_bytes()
