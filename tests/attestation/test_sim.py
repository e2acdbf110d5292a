"""The sim authority: honest about being simulated, verified by the production SNP code."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

from cryptography.x509.oid import NameOID

from sealroom.attestation import kinds
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.sim.authority import SimAuthority, measure_tree
from sealroom.attestation.snp.claims import SnpClaims

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def test_state_persists_with_private_key_0600(tmp_path: Path) -> None:
    a = SimAuthority.load_or_create(tmp_path / "sim", NOW)
    b = SimAuthority.load_or_create(tmp_path / "sim", NOW)
    assert a.root == b.root and a.keys.chip_id == b.keys.chip_id
    mode = stat.S_IMODE((tmp_path / "sim" / "vcek-key.pem").stat().st_mode)
    assert mode == 0o600
    assert not (tmp_path / "sim" / "ark-key.pem").exists()  # ARK key is never stored


def test_every_name_says_simulated() -> None:
    a = SimAuthority.ephemeral(NOW)
    for cert in (a.keys.ark, a.keys.ask, a.keys.vcek):
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
        assert "SIMULATED" in str(cn) and "NOT AMD" in str(org)


def test_sim_evidence_verifies_as_simulated_only_with_its_root() -> None:
    a = SimAuthority.ephemeral(NOW)
    item = a.evidence(a.report(measurement=bytes(48)))
    claims = kinds.get("snp").verify(item, VerifyContext(now=NOW, extra_roots=(a.root,)))
    assert isinstance(claims, SnpClaims)
    assert claims.simulated and claims.product == "Simulated" and claims.chip_id_checked
    assert "ark" not in item.attachments  # trust is the verifier's choice, not the evidence's


def test_measurement_changes_with_code(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("print(1)\n")
    first = measure_tree(tmp_path / "pkg")
    assert measure_tree(tmp_path / "pkg") == first
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"x")
    assert measure_tree(tmp_path / "pkg") == first  # caches do not count
    (tmp_path / "pkg" / "a.py").write_text("print(2)\n")
    assert measure_tree(tmp_path / "pkg") != first
    assert len(first) == 48


def test_concurrent_creation_yields_one_consistent_authority(tmp_path: Path) -> None:
    """Host agents and the CLI may create the authority at the same moment."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; "
        "from sealroom.attestation.sim.authority import SimAuthority; "
        "a = SimAuthority.load_or_create(Path(sys.argv[1])); print(a.root.serial_number)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "sim")], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    serials = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(serials) == 1
    a = SimAuthority.load_or_create(tmp_path / "sim")
    item = a.evidence(a.report(measurement=bytes(48)))
    kinds.get("snp").verify(item, VerifyContext(now=datetime.now(UTC), extra_roots=(a.root,)))
