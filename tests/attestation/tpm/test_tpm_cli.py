"""`sealroom attest verify` on every vTPM vector, as a user runs it: exit codes 0/2/4."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sealroom.attestation.policy import Policy, starter_policy

NOW = "2025-06-01T00:00:00+00:00"
CHALLENGE = b"challenge".hex()


def sealroom(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEALROOM_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sealroom.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _policy(tmp_path: Path, body: dict[str, object]) -> str:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"version": 1, **body}))
    return str(path)


def test_gce_with_google_roots_and_nonce_is_accepted(vectors: Path, tmp_path: Path) -> None:
    d = vectors / "vtpm" / "gce_shielded_vm"
    pol = _policy(tmp_path, {"tpm": {"extra_data": {"mode": "nonce"}, "require_event_log": True}})
    args = [
        "attest", "verify", str(d / "attestation_nonce9009.pb"), "--policy", pol, "--now", NOW,
        "--nonce", "9009",
    ]  # fmt: skip
    r = sealroom(*args, "--root", str(d / "tpm_ek_root_1.cer"),
                 "--root", str(d / "tpm_ek_intermediate_2.crt"), home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    r = sealroom(*args, home=tmp_path)  # no root: the AK is vouched for by nobody
    assert r.returncode == 4, r.stdout + r.stderr
    assert "ak_trust" in r.stdout + r.stderr


def test_swtpm_vector_needs_a_pinned_ak(vectors: Path, tmp_path: Path) -> None:
    ev = vectors / "vtpm" / "swtpm_trustee" / "tpm_evidence.json"
    ak = tmp_path / "ak.der"
    ak.write_bytes(base64.b64decode(json.loads(ev.read_text())["ak_public"]))
    pol = _policy(tmp_path, {"tpm": {}})
    r = sealroom("attest", "verify", str(ev), "--policy", pol, home=tmp_path)
    assert r.returncode == 4, r.stdout + r.stderr
    r = sealroom("attest", "verify", str(ev), "--policy", pol, "--ak", str(ak), home=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    "rel",
    [
        "azure_snp_genoa/evidence.json",
        "azure_snp_milan/evidence_v0.json",
        "azure_snp_milan/evidence_v1.json",
        "azure_snp_milan/evidence_v2_userdata.json",
    ],
)
def test_azure_snp_evidence_is_accepted(vectors: Path, tmp_path: Path, rel: str) -> None:
    pol = _policy(tmp_path, {"az-snp-vtpm": {"vm_configuration": {"secure-boot": True}}})
    r = sealroom("attest", "verify", str(vectors / "vtpm" / rel), "--policy", pol,
                 "--now", NOW, home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_azure_raw_hcl_report_with_certs_and_quote(vectors: Path, tmp_path: Path) -> None:
    d = vectors / "vtpm" / "azure_snp_milan_hcl"
    pol = _policy(tmp_path, {"az-snp-vtpm": {"tpm": {"extra_data": {"mode": "nonce"}}}})
    r = sealroom(
        "attest", "verify", str(d / "hcl_report.bin"), "--policy", pol, "--now", NOW,
        "--certs", str(d / "thim_vcek_ask_ark.pem"), "--pcrs", str(d / "tpm_quote.json"),
        "--nonce", CHALLENGE, home=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_azure_tdx_evidence_is_accepted_with_a_collateral_free_tdx_section(
    vectors: Path, tmp_path: Path
) -> None:
    pol = _policy(tmp_path, {"az-tdx-vtpm": {
        "tpm": {"extra_data": {"mode": "nonce"}},
        "tdx": {"require_collateral": False, "require_crl": False},
    }})  # fmt: skip
    r = sealroom("attest", "verify", str(vectors / "vtpm" / "azure_tdx" / "evidence_v1.json"),
                 "--policy", pol, "--now", NOW, "--nonce", CHALLENGE, home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_azure_evidence_with_edited_runtime_data_is_not_authentic(
    vectors: Path, tmp_path: Path
) -> None:
    obj = json.loads((vectors / "vtpm" / "azure_snp_milan" / "evidence_v1.json").read_text())
    raw = bytearray(base64.urlsafe_b64decode(obj["hcl_report"] + "=="))
    # One character of vmUniqueId: still valid JSON, no longer what REPORT_DATA binds.
    at = raw.index(b'"vmUniqueId":"') + len(b'"vmUniqueId":"')
    raw[at] = ord("0") if raw[at] != ord("0") else ord("1")
    obj["hcl_report"] = base64.urlsafe_b64encode(bytes(raw)).decode()
    ev = tmp_path / "tampered.json"
    ev.write_text(json.dumps(obj))
    pol = _policy(tmp_path, {"az-snp-vtpm": {}})
    r = sealroom("attest", "verify", str(ev), "--policy", pol, "--now", NOW, home=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "runtime data" in r.stdout + r.stderr


@pytest.mark.parametrize("kinds", [["tpm"], ["az-snp-vtpm"], ["az-tdx-vtpm"]])
def test_starter_policies_load(kinds: list[str]) -> None:
    Policy.loads(starter_policy(kinds))
