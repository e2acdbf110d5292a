"""Fixtures for the Intel DCAP tests: the real vectors, read in place, and pinned times."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealroom.attestation.tdx.verify import clear_caches

from ._helpers import DATA, VECTORS


@pytest.fixture(scope="session")
def intel() -> Path:
    """../shared/vectors/intel; skips with a message where the vectors are absent."""
    if not (VECTORS / "intel" / "Intel_SGX_Root_CA.der").is_file():
        pytest.skip(f"real attestation vectors not found at {VECTORS} (../shared/vectors)")
    return VECTORS / "intel"


@pytest.fixture(scope="session")
def vtpm() -> Path:
    if not (VECTORS / "vtpm" / "azure_tdx" / "td_quote.bin").is_file():
        pytest.skip(f"real attestation vectors not found at {VECTORS} (../shared/vectors)")
    return VECTORS / "vtpm"


@pytest.fixture(scope="session")
def tcb_signing_2018() -> bytes:
    """The Intel SGX TCB Signing certificate as served in 2023 (same key as the 2025
    re-issue in the vectors, valid 2018-05-21..2025-05-21); see data/README.md."""
    return (DATA / "Intel_SGX_TCB_Signing_2018.pem").read_bytes()


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    # Every test starts from cold caches so no verdict leaks between cases.
    clear_caches()
