"""Shared fixtures: the real vectors folder (../shared/vectors, read in place); the
Hypothesis profiles.

Property tests are derandomized by default, so a test run (and CI) examines the same
examples every time and its verdict does not depend on luck. New inputs are explored with
``SEALROOM_FUZZ=explore scripts/dev.sh test`` (random seeds); what it
finds is fixed and kept as a named regression test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("sealroom-ci", derandomize=True)
settings.register_profile("sealroom-explore", derandomize=False)
settings.load_profile(
    "sealroom-explore" if os.environ.get("SEALROOM_FUZZ") == "explore" else "sealroom-ci"
)

REPO = Path(__file__).resolve().parents[1]
VECTORS = (REPO / ".." / "shared" / "vectors").resolve()


@pytest.fixture(scope="session")
def vectors() -> Path:
    if not (VECTORS / "README.md").is_file():
        pytest.skip(f"real attestation vectors not found at {VECTORS} (../shared/vectors)")
    return VECTORS
