"""The embedded Intel SGX Root CA is the one in the vectors, byte for byte."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization

from sealroom.attestation.tdx.verify import intel_root
from sealroom.attestation.x509util import load_certificate

from ._helpers import DATA

INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


def test_embedded_root_equals_vector_copy(intel: Path) -> None:
    der = intel_root().public_bytes(serialization.Encoding.DER)
    assert der == (intel / "Intel_SGX_Root_CA.der").read_bytes()


def test_embedded_root_fingerprint() -> None:
    assert intel_root().fingerprint(hashes.SHA256()).hex() == INTEL_ROOT_SHA256


def test_tcb_signing_2018_fingerprint() -> None:
    cert = load_certificate((DATA / "Intel_SGX_TCB_Signing_2018.pem").read_bytes())
    assert cert.fingerprint(hashes.SHA256()).hex() == (
        "ec37d98107bfb7dab6ff8de4d4dda6fde30a6f50b0d7b03eefb5652f1e652969"
    )
    assert cert.issuer == intel_root().subject
