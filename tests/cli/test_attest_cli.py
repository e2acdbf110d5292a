"""`sealroom attest ...` driven as a user would: a subprocess, files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sealroom.attestation.policy import Policy


def sealroom(
    *args: str, home: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEALROOM_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sealroom.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        input=stdin.decode() if stdin is not None else None,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def starter(tmp_path: Path, home: Path) -> Path:
    out = tmp_path / "policy.yaml"
    r = sealroom("attest", "policy", "init", "--out", str(out), home=home)
    assert r.returncode == 0, r.stderr
    Policy.load(out)
    return out


def test_policy_init_refuses_to_overwrite(starter: Path, home: Path) -> None:
    r = sealroom("attest", "policy", "init", "--out", str(starter), home=home)
    assert r.returncode == 1 and "exists" in r.stderr
    r = sealroom("attest", "policy", "init", home=home)
    assert r.returncode == 0 and "allow_simulated: false" in r.stdout and "#" in r.stdout


def test_verify_real_vector_ok(vectors: Path, starter: Path, home: Path) -> None:
    r = sealroom(
        "attest",
        "verify",
        str(vectors / "amd/milan_oak/report.bin"),
        "--certs",
        str(vectors / "amd/milan_oak/vcek.der"),
        "--policy",
        str(starter),
        "--now",
        "2025-06-01T00:00:00Z",
        home=home,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ACCEPTED" in r.stdout and "SIMULATED" not in r.stdout


def test_verify_json_and_policy_violation_exit_4(
    vectors: Path, starter: Path, home: Path, tmp_path: Path
) -> None:
    ear = tmp_path / "result.jwt"
    r = sealroom(
        "attest",
        "verify",
        str(vectors / "amd/milan_gosev_debug/report.bin"),
        "--certs",
        str(vectors / "amd/milan_gosev_debug/vcek.der"),
        "--policy",
        str(starter),
        "--now",
        "2024-01-01T00:00:00Z",
        "--json",
        "--ear",
        str(ear),
        home=home,
    )
    assert r.returncode == 4, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is False
    failed = [x for x in out["submods"]["cpu0"]["rules"] if not x["pass"]]
    assert [(x["field"], x["got"], x["want"]) for x in failed] == [
        ("POLICY.DEBUG", "true", "false")
    ]
    # under --json the error is a JSON document that still names each failed rule
    err = json.loads(r.stderr)
    assert err["error"] == "policy-violation" and err["exit_code"] == 4
    assert any("POLICY.DEBUG is true, policy wants false" in d for d in err["details"])
    assert ear.read_text().count(".") == 2  # a JWS compact token was written


def test_not_authentic_exit_2(vectors: Path, starter: Path, home: Path) -> None:
    r = sealroom(
        "attest",
        "verify",
        str(vectors / "amd/milan_trustee/report.bin"),
        "--certs",
        str(vectors / "amd/milan_trustee/NEG_vcek_tampered_hwid_legacy.der"),
        "--policy",
        str(starter),
        "--now",
        "2024-06-01T00:00:00Z",
        home=home,
    )
    assert r.returncode == 2
    assert "certificate-chain-invalid" in r.stderr


def test_expired_without_now_exit_2(vectors: Path, starter: Path, home: Path) -> None:
    r = sealroom(
        "attest",
        "verify",
        str(vectors / "amd/milan_vlek_aws_trustee/report.bin"),
        "--certs",
        str(vectors / "amd/milan_vlek_aws_trustee/vlek.der"),
        "--policy",
        str(starter),
        home=home,
    )
    assert r.returncode == 2 and "expired" in r.stderr and "--now" in r.stderr


def test_collateral_unavailable_exit_3(vectors: Path, starter: Path, home: Path) -> None:
    r = sealroom(
        "attest",
        "verify",
        str(vectors / "amd/milan_vlek_aws_trustee/report.bin"),
        "--policy",
        str(starter),
        "--now",
        "2025-06-01T00:00:00Z",
        home=home,
    )
    assert r.returncode == 3 and "VLEK" in r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["attest", "verify", "/nonexistent", "--policy", "/nonexistent"], "cannot read"),
        (["attest", "verify", "-", "--policy", "POLICY"], "cannot tell what kind"),
        (["attest", "verify", "REPORT", "--policy", "POLICY", "--now", "yesterday"], "--now"),
        (["attest", "verify", "REPORT", "--policy", "POLICY", "--nonce", "xyz"], "--nonce"),
        (
            ["attest", "verify", "REPORT", "--policy", "POLICY", "--kind", "sgx-magic"],
            "unknown evidence kind",
        ),
        (["attest", "verify", "REPORT"], "policy"),  # usage error: exit 1, not 2
    ],
)
def test_bad_input_exit_1(
    vectors: Path, starter: Path, home: Path, args: list[str], needle: str
) -> None:
    report = str(vectors / "amd/milan_oak/report.bin")
    args = [report if a == "REPORT" else str(starter) if a == "POLICY" else a for a in args]
    r = sealroom(*args, home=home, stdin=b"not evidence")
    assert r.returncode == 1, r.stdout + r.stderr
    assert needle in r.stderr


def test_inspect_pretty_and_json(vectors: Path, home: Path) -> None:
    r = sealroom(
        "attest", "inspect", str(vectors / "amd/turin_oak/report.bin"), "--json", home=home
    )
    assert r.returncode == 0, r.stderr
    item = json.loads(r.stdout)["items"]["item0"]
    assert item["verified"] is False and item["product"] == "Turin"
    assert item["reported_tcb"]["fmc"] == 0 and item["reported_tcb"]["microcode"] == 71
    r = sealroom("attest", "inspect", str(vectors / "amd/milan_virtee/report.hex"), home=home)
    assert r.returncode == 0 and "NOT verified" in r.stdout


def test_sim_report_needs_root_and_allow_simulated(
    tmp_path: Path, home: Path, starter: Path
) -> None:
    ev = tmp_path / "sim.json"
    r = sealroom(
        "sim",
        "report",
        "--out",
        str(ev),
        "--measurement",
        "ab" * 48,
        "--report-data",
        "0102",
        home=home,
    )
    assert r.returncode == 0, r.stderr
    assert "SIMULATED" in r.stderr
    root = tmp_path / "sim-root.pem"
    root.write_text(sealroom("sim", "root", home=home).stdout)
    # Without the sim root: not authentic.
    r = sealroom("attest", "verify", str(ev), "--policy", str(starter), home=home)
    assert r.returncode == 2 and "untrusted-root" in r.stderr
    # With the root but a production policy: rejected because it is simulated.
    r = sealroom(
        "attest", "verify", str(ev), "--policy", str(starter), "--root", str(root), home=home
    )
    assert r.returncode == 4 and "SIMULATED" in r.stdout
    dev = tmp_path / "dev.yaml"
    dev.write_text(
        "version: 1\nallow_simulated: true\nsnp:\n  measurements: ['"
        + "ab" * 48
        + "']\n  report_data: {mode: nonce}\n"
    )
    r = sealroom(
        "attest",
        "verify",
        str(ev),
        "--policy",
        str(dev),
        "--root",
        str(root),
        "--nonce",
        "0102",
        home=home,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ACCEPTED (SIMULATED)" in r.stdout
    r = sealroom(
        "attest",
        "verify",
        str(ev),
        "--policy",
        str(dev),
        "--root",
        str(root),
        "--nonce",
        "0103",
        home=home,
    )
    assert r.returncode == 4


def test_demo_runs_end_to_end(home: Path) -> None:
    r = sealroom("demo", home=home)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "demo complete" in r.stdout and "SIMULATED" in r.stdout


def test_rule_values_with_brackets_are_shown_verbatim(
    vectors: Path, home: Path, tmp_path: Path
) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text("version: 1\nsnp:\n  vmpl: [0]\n")
    r = sealroom(
        "attest",
        "verify",
        str(vectors / "amd/milan_vlek_aws_trustee/report.bin"),
        "--certs",
        str(vectors / "amd/milan_vlek_aws_trustee/vlek.der"),
        "--policy",
        str(pol),
        "--now",
        "2025-06-01T00:00:00Z",
        home=home,
    )
    assert r.returncode == 4
    assert "one of [0]" in r.stdout


# -- many files in parallel (issue 16) ------------------------------------------------------


@pytest.fixture
def sim_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A directory of sim evidence: three good, one with another measurement (policy
    violation), one with a flipped signature byte (not authentic), one that is not
    evidence (bad input); the sim root; a policy for the good measurement."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from sealroom.attestation.evidence import EvidenceBundle
    from sealroom.attestation.sim.authority import SimAuthority

    sim = SimAuthority.ephemeral()
    d = tmp_path / "evidence"
    d.mkdir()

    def write(name: str, measurement: bytes, tamper: bool = False) -> None:
        item = sim.evidence(sim.report(measurement=measurement), collected_at=datetime.now(UTC))
        if tamper:
            data = bytearray(item.data)
            data[0x2A0 + 5] ^= 1  # inside the report's signature (AMD SNP ABI table 22)
            item = replace(item, data=bytes(data))
        (d / name).write_text(EvidenceBundle.single(item).to_json())

    for n in range(3):
        write(f"good-{n}.json", b"\xab" * 48)
    write("other-measurement.json", b"\xcd" * 48)
    write("tampered.json", b"\xab" * 48, tamper=True)
    (d / "not-evidence.json").write_text('{"hello": "world"}')
    (d / ".hidden").write_text("skipped")
    root = tmp_path / "sim-root.pem"
    root.write_bytes(sim.root_pem())
    policy = tmp_path / "dev.yaml"
    policy.write_text(
        "version: 1\nallow_simulated: true\nsnp:\n  measurements: ['" + "ab" * 48 + "']\n"
    )
    return d, root, policy


def test_verify_many_files_per_file_verdicts_worst_exit(
    sim_files: tuple[Path, Path, Path], home: Path
) -> None:
    d, root, policy = sim_files
    common = ("--policy", str(policy), "--root", str(root), "--jobs", "2")
    r = sealroom("attest", "verify", str(d), *common, "--json", home=home)
    out = json.loads(r.stdout)
    verdicts = {Path(v["file"]).name: (v["verdict"], v["exit"]) for v in out["files"]}
    assert verdicts == {
        "good-0.json": ("accepted", 0),
        "good-1.json": ("accepted", 0),
        "good-2.json": ("accepted", 0),
        "not-evidence.json": ("bad-input", 1),
        "other-measurement.json": ("rejected", 4),
        "tampered.json": ("not-authentic", 2),
    }
    # worst first: not authentic beats policy violation beats bad input
    assert r.returncode == 2 and out["exit"] == 2, r.stderr
    assert all(v["simulated"] for v in out["files"] if v["exit"] in (0, 4))
    # without the tampered file the worst is the policy violation; text output per file
    good = [str(d / f"good-{n}.json") for n in range(3)]
    r = sealroom("attest", "verify", *good, str(d / "other-measurement.json"), *common, home=home)
    assert r.returncode == 4, r.stdout + r.stderr
    assert r.stdout.count("ACCEPTED (SIMULATED)") == 3
    assert "REJECTED (SIMULATED)" in r.stdout and "MEASUREMENT" in r.stdout
    assert "1 of 4 evidence files not accepted" in r.stderr
    r = sealroom("attest", "verify", *good, str(d / "not-evidence.json"), *common, home=home)
    assert r.returncode == 1 and "BAD INPUT" in r.stdout
    r = sealroom("attest", "verify", *good, *common, home=home)
    assert r.returncode == 0 and "3 files: 3 accepted, 0 not" in r.stdout


def test_verify_many_single_process_gives_the_same_verdicts(
    sim_files: tuple[Path, Path, Path], home: Path
) -> None:
    d, root, policy = sim_files
    runs = [
        sealroom(
            "attest",
            "verify",
            str(d),
            "--policy",
            str(policy),
            "--root",
            str(root),
            "--jobs",
            jobs,
            "--json",
            home=home,
        )
        for jobs in ("1", "2")
    ]
    one, two = (json.loads(r.stdout) for r in runs)
    assert one == two and runs[0].returncode == runs[1].returncode == 2


def test_verify_many_refuses_ear_online_and_stdin_among_files(
    sim_files: tuple[Path, Path, Path], home: Path, tmp_path: Path
) -> None:
    d, root, policy = sim_files
    base = ("attest", "verify", str(d), "--policy", str(policy), "--root", str(root))
    r = sealroom(*base, "--ear", str(tmp_path / "x.jwt"), home=home)
    assert r.returncode == 1 and "--ear and --online take one evidence file" in r.stderr
    r = sealroom(*base, "-", home=home)
    assert r.returncode == 1 and "give it alone" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = sealroom("attest", "verify", str(empty), "--policy", str(policy), home=home)
    assert r.returncode == 1 and "no evidence files" in r.stderr
