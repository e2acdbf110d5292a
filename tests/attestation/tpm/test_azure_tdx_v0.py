"""Trustee's Azure TDX vTPM evidence v0 (``deps/verifier/src/az_tdx_vtpm/compat.rs``).

v0 has no ``version`` and carries every byte string as a JSON list of byte values:
``{"tpm_quote": {"signature": [..], "message": [..], "pcrs": [[32 bytes] x 24]},
"hcl_report": [..], "td_quote": [..]}``. Trustee's own v0 test file may not be committed
here (fetched data), so each test BUILDS the v0 container from the REAL vector
``../shared/vectors/vtpm/azure_tdx`` (evidence_v1.json's TPM quote, hcl_report.bin,
td_quote.bin): the same hardware evidence, in the v0 shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.tdx.claims import TdxClaims
from sealroom.attestation.tpm.claims import AzureVtpmClaims
from sealroom.errors import AttestationError, MalformedEvidenceError

NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def azure_tdx(vectors: Path) -> Path:
    d = vectors / "vtpm" / "azure_tdx"
    if not (d / "evidence_v1.json").is_file():
        pytest.skip(f"real Azure TDX vector not found at {d}")
    return d


def v0_from_real_vector(d: Path) -> dict[str, Any]:
    """Trustee's v0 shape, from the real v1 evidence's TPM quote and the raw files."""
    v1 = json.loads((d / "evidence_v1.json").read_text())
    q = v1["tpm_quote"]
    return {
        "tpm_quote": {
            "signature": list(bytes.fromhex(q["signature"])),
            "message": list(bytes.fromhex(q["message"])),
            "pcrs": [list(bytes.fromhex(p)) for p in q["pcrs"]],
        },
        "hcl_report": list((d / "hcl_report.bin").read_bytes()),
        "td_quote": list((d / "td_quote.bin").read_bytes()),
    }


def _verify(data: bytes) -> AzureVtpmClaims:
    kind = kinds.sniff(data)
    assert kind.name == "az-tdx-vtpm"
    (item,) = kind.load(data).items
    claims = kind.verify(item, VerifyContext(now=NOW, nonce=b"challenge"))
    assert isinstance(claims, AzureVtpmClaims)
    return claims


def test_azure_tdx_v0_evidence_accepted(azure_tdx: Path) -> None:
    """Before: "Azure evidence version is None, expected 1 or 2" (MalformedEvidenceError)."""
    v0 = json.dumps(v0_from_real_vector(azure_tdx)).encode()
    got = _verify(v0)
    want = _verify((azure_tdx / "evidence_v1.json").read_bytes())
    assert got.verified
    assert got.tpm.ak_trust == "certified"
    assert got.tpm.ak_certification == "azure-hcl-tdx"
    assert got.tpm.extra_data == b"challenge"
    assert got.tpm.pcrs == want.tpm.pcrs
    assert isinstance(got.hardware, TdxClaims)
    assert got.hardware.report_data == want.hardware.report_data  # type: ignore[attr-defined]
    assert got.hardware.fmspc == bytes.fromhex("00806f050000")
    assert got.tdreport_report_data == want.tdreport_report_data


def test_azure_tdx_v0_tampered_tpm_quote_is_not_authentic(azure_tdx: Path) -> None:
    v0 = v0_from_real_vector(azure_tdx)
    v0["tpm_quote"]["signature"][7] ^= 1
    with pytest.raises(AttestationError):
        _verify(json.dumps(v0).encode())


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda o: o.pop("td_quote"), "v0"),
        (lambda o: o.update(extra=1), "v0"),
        (lambda o: o.update(hcl_report="SENMQQ"), "hcl_report"),  # base64 is v1's, not v0's
        (lambda o: o.update(td_quote=[256]), "td_quote"),
    ],
)
def test_azure_tdx_v0_malformed_is_rejected(azure_tdx: Path, edit: Any, needle: str) -> None:
    v0 = v0_from_real_vector(azure_tdx)
    edit(v0)
    with pytest.raises(MalformedEvidenceError, match=needle):
        kinds.get("az-tdx-vtpm").load(json.dumps(v0).encode())


def test_azure_tdx_v0_through_the_cli(azure_tdx: Path, tmp_path: Path) -> None:
    ev = tmp_path / "evidence_v0.json"
    ev.write_text(json.dumps(v0_from_real_vector(azure_tdx)))
    pol = tmp_path / "policy.yaml"
    pol.write_text(
        json.dumps(
            {
                "version": 1,
                "az-tdx-vtpm": {
                    "tpm": {"extra_data": {"mode": "nonce"}},
                    "tdx": {"require_collateral": False, "require_crl": False},
                },
            }
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "sealroom.cli.main", "attest", "verify", str(ev),
         "--policy", str(pol), "--now", "2025-06-01T00:00:00Z",
         "--nonce", b"challenge".hex()],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "SEALROOM_HOME": str(tmp_path / "home"), "COLUMNS": "200"},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
