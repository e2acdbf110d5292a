"""`sealroom attest verify` on the Intel and NVIDIA vectors: the verdicts the vectors'
README states, through the generic CLI (collateral file, certificate chain, nonce)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .test_attest_cli import sealroom

NV_NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
HGX_NONCE = "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e"


@pytest.fixture
def policies(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for kind in ("tdx", "nvidia"):
        p = tmp_path / f"{kind}.yaml"
        r = sealroom(
            "attest", "policy", "init", "--kind", kind, "--out", str(p), home=tmp_path / "home"
        )
        assert r.returncode == 0, r.stderr
        out[kind] = p
    return out


def test_tdx_quote_with_collateral_accepted(
    vectors: Path, policies: dict[str, Path], tmp_path: Path
) -> None:
    d = vectors / "intel/tdx_v4_phala"
    r = sealroom(
        "attest",
        "verify",
        str(d / "quote.bin"),
        "--collateral",
        str(d / "collateral.json"),
        "--policy",
        str(policies["tdx"]),
        "--now",
        "2025-07-01T00:00:00Z",
        "--json",
        home=tmp_path / "home",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    claims = json.loads(r.stdout)["submods"]["cpu0"]["claims"]
    assert claims["tcb_status"] == "UpToDate" and claims["crl_checked"] is True


def test_tdx_debug_td_rejected_by_starter_policy(
    vectors: Path, policies: dict[str, Path], tmp_path: Path
) -> None:
    r = sealroom(
        "attest",
        "verify",
        str(vectors / "intel/trustee/tdx_v4_debug_td_quote.bin"),
        "--policy",
        str(policies["tdx"]),
        "--now",
        "2025-01-01T00:00:00Z",
        home=tmp_path / "home",
    )
    assert r.returncode == 4
    assert "TD_ATTRIBUTES.DEBUG is true, policy wants false" in r.stderr


def test_h100_with_chain_and_nonce_accepted(
    vectors: Path, policies: dict[str, Path], tmp_path: Path
) -> None:
    d = vectors / "nvidia/h100_nvtrust"
    r = sealroom(
        "attest",
        "verify",
        str(d / "attestation_report.hex"),
        "--certs",
        str(d / "cert_chain.pem"),
        "--policy",
        str(policies["nvidia"]),
        "--now",
        "2024-09-01T00:00:00Z",
        "--nonce",
        NV_NONCE,
        home=tmp_path / "home",
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_h100_wrong_nonce_is_a_policy_violation(
    vectors: Path, policies: dict[str, Path], tmp_path: Path
) -> None:
    d = vectors / "nvidia/h100_nvtrust"
    r = sealroom(
        "attest",
        "verify",
        str(d / "attestation_report.hex"),
        "--certs",
        str(d / "cert_chain.pem"),
        "--policy",
        str(policies["nvidia"]),
        "--now",
        "2024-09-01T00:00:00Z",
        "--nonce",
        "00" * 32,
        home=tmp_path / "home",
    )
    assert r.returncode == 4 and "nonce" in r.stderr


@pytest.mark.parametrize(
    "neg", ["NEG_root_only.pem", "NEG_missing_intermediate.pem", "NEG_missing_leaf.pem"]
)
def test_h100_broken_chains_not_authentic(
    vectors: Path, policies: dict[str, Path], tmp_path: Path, neg: str
) -> None:
    r = sealroom(
        "attest",
        "verify",
        str(vectors / "nvidia/h100_nvtrust/attestation_report.hex"),
        "--certs",
        str(vectors / "nvidia/negative_chains" / neg),
        "--policy",
        str(policies["nvidia"]),
        "--now",
        "2024-09-01T00:00:00Z",
        home=tmp_path / "home",
    )
    assert r.returncode == 2, r.stdout + r.stderr


def test_eight_gpus_one_bundle(vectors: Path, policies: dict[str, Path], tmp_path: Path) -> None:
    r = sealroom(
        "attest",
        "verify",
        str(vectors / "nvidia/hgx_ppcie/gpu_evidence_8xH100.json"),
        "--policy",
        str(policies["nvidia"]),
        "--now",
        "2026-01-15T00:00:00Z",
        "--nonce",
        HGX_NONCE,
        "--json",
        home=tmp_path / "home",
    )
    out = json.loads(r.stdout)
    assert sorted(out["submods"]) == [f"gpu{n}" for n in range(8)]
    assert r.returncode == 0, [
        x for s in out["submods"].values() for x in s["rules"] if not x["pass"]
    ]
