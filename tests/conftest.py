"""Shared fixtures: the real vectors folder (../shared/vectors, read in place)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VECTORS = (REPO / ".." / "shared" / "vectors").resolve()


@pytest.fixture(scope="session")
def vectors() -> Path:
    if not (VECTORS / "README.md").is_file():
        pytest.skip(f"real attestation vectors not found at {VECTORS} (../shared/vectors)")
    return VECTORS
